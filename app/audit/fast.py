"""The offline checker's fast pass over event lines written as the service writes them.

The export writes an event line as ``{"type":"event","hash":"<64 hex>",`` followed by the
members of the event's canonical body (RFC 8785), i.e. the line *is* ``"{" + body[1:]`` with
the unhashed ``type`` and ``hash`` in front. The fast pass hashes those bytes straight out
of the line, reads ``seq`` and ``prev_hash`` from their fixed places at the body's end, and
feeds the verifier; it parses no JSON.

It can only say *intact*, never *not intact*: it hands the file back (``None``) at the first
line it cannot read that way, and the caller (app.audit.reader) then runs the careful pass
from the start, which parses every line and recomputes every canonical form; so does any
report of the fast pass that is not ``ok``. Verdicts, reasons and first bad sequence numbers
are therefore always the careful pass's.

Why *intact* from the fast pass is sound: it requires the running Merkle tree (so every
event's hash is a leaf under the roots the export's signed checkpoints state, the last one
over the export's last event) and bytes that hash to the line's own hash. Bytes that hash to
a leaf of a tree the service signed are, short of a SHA-256 collision, the bytes the service
hashed, which are the canonical body it wrote: the careful pass would rebuild exactly them.
Anything else (an edited line, rehashed or not, a duplicate key, a reordered or respaced
body) either fails the line's own hash, or the link, or a signed root, and the careful pass
says where and why.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable

import orjson

from app.audit.verify import ChainVerifier, VerifyReport

HEAD = b'{"type":"event","hash":"'
_HASH_END = len(HEAD) + 64
#: Where the body's members start: after the hash's closing quote and comma.
_BODY = _HASH_END + 2
_SEQ = b',"seq":'
_REFS = b',"refs":{'
_PREV = b'"prev_hash":"'
_PREV_SPAN = len(_PREV) + 64 + 1
#: Records that are not events, which the careful pass skips too.
_SKIPPED = frozenset({"header", "checkpoint", "tree_prefix", "consistency"})


def walk(lines: Iterable[bytes], verifier: ChainVerifier) -> VerifyReport | None:
    """Feed every event line; the report if it is ``ok``, else ``None`` (run the careful
    pass). ``verifier`` must keep the Merkle tree."""
    if verifier.compact is None:
        return None
    for line in lines:
        if not line.startswith(HEAD):
            if not _skippable(line):
                return None
            continue
        if not _event(line, verifier):
            return None
    report = verifier.finish()
    return report if report.ok else None


def _skippable(line: bytes) -> bool:
    """A blank line, or a record the careful pass would skip as well."""
    if not line.strip():
        return True
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return type(obj) is dict and obj.get("type") in _SKIPPED


def _event(line: bytes, verifier: ChainVerifier) -> bool:
    """One event line in the service's form, checked; False if it is not in that form or
    does not hold."""
    end = len(line) - 1 if line.endswith(b"\n") else len(line)
    if line[_HASH_END:_BODY] != b'",' or not line.startswith(b'"action":', _BODY):
        return False
    if line[end - 1] != 0x7D:  # the body's closing brace
        return False
    hasher = hashlib.sha256(b"{")
    hasher.update(memoryview(line)[_BODY:end])
    digest = hasher.digest()
    hash_hex = line[len(HEAD) : _HASH_END]
    if binascii.hexlify(digest) != hash_hex:
        return False
    # The canonical body's last members, in key order: prev_hash, refs, seq.
    seq_at = line.rfind(_SEQ, _BODY, end)
    seq_text = line[seq_at + len(_SEQ) : end - 1]
    refs_at = line.rfind(_REFS, _BODY, seq_at)
    if seq_at < 0 or refs_at < 0 or not seq_text.isdigit():
        return False
    prev_at = refs_at - _PREV_SPAN
    if line[prev_at : prev_at + len(_PREV)] != _PREV or line[refs_at - 1] != 0x22:
        return False
    prev_hash = line[prev_at + len(_PREV) : refs_at - 1].decode("ascii", "replace")
    return verifier.feed_hashed(int(seq_text), prev_hash, hash_hex.decode(), digest)
