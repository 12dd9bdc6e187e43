"""The hash chain and the checkpoint statement, independent of any database.

An event's hash is ``sha256(JCS(body))`` in lowercase hex, where JCS is RFC 8785 canonical
JSON and ``body`` is::

    {"seq": n, "prev_hash": <hash of event n-1, or 64 zeros for n = 1>,
     "occurred_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ", "action": "...",
     "actor": {"type": ..., "id": ..., "role": ...},
     "refs": {"screening_id": ..., "referral_id": ..., "partner_id": ...,
              "subject_id": ..., "request_id": ...},
     "data": {...}}

A checkpoint is a C2SP tlog checkpoint (:mod:`app.audit.note`): the origin, the tree size
``n`` and the RFC 9162 root over the first ``n`` events' hashes (:mod:`app.audit.merkle`),
signed with Ed25519. Checkpoints signed before the tree existed (version 1) signed
``JCS({"type": "ruta.audit.checkpoint", "version": 1, "seq": n, "hash": <hash of event n>,
"time": ..., "key_id": ...})``; they are still verified.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.audit import note

GENESIS_HASH = "0" * 64
REF_KEYS = ("screening_id", "referral_id", "partner_id", "subject_id", "request_id")
CHECKPOINT_TYPE = "ruta.audit.checkpoint"


#: Integers JCS writes exactly (it writes every number as an IEEE 754 double).
_SAFE_INT = 2**53 - 1
_ACTOR_KEYS = frozenset({"type", "id", "role"})
_REF_KEY_SET = frozenset(REF_KEYS)


def _plain(value: Any) -> bool:
    """True when orjson already writes ``value`` as RFC 8785 does: ASCII object keys
    (so code-point order is UTF-16 order), no floats, integers JCS can write exactly."""
    if value is None or value is True or value is False or type(value) is str:
        return True
    if type(value) is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    if type(value) is dict:
        return all(type(k) is str and k.isascii() and _plain(v) for k, v in value.items())
    if type(value) is list or type(value) is tuple:
        return all(_plain(v) for v in value)
    return False


_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_SCALARS = (str, bool, type(None))


def _flat(values: dict[str, Any]) -> bool:
    """Every value a string or null."""
    for value in values.values():  # noqa: SIM110 (a loop: no generator per event)
        if value is not None and type(value) is not str:
            return False
    return True


def flat_data(data: Any) -> bool:
    """``data`` as events hold it: ASCII keys; strings, booleans, nulls, integers (orjson
    bounds them) and lists of strings. Anything else takes the general path."""
    if type(data) is not dict or not "".join(data).isascii():
        return False
    for value in data.values():
        kind = type(value)
        if kind in _SCALARS or kind is int:
            continue
        if kind is list:
            for item in value:
                if type(item) is not str:
                    return False
            continue
        return False
    return True


def canonical(document: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes.

    Audit events hold only strings, integers, booleans and nulls with ASCII keys; for those
    orjson (sorted keys) writes exactly the JCS bytes (same escapes, no whitespace), many
    times faster than the ``rfc8785`` package, which handles the rest (floats, non-ASCII
    keys). tests/audit/test_chain.py checks the two agree.
    """
    if _plain(document):
        try:
            return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it as it always has
    encoded: bytes = rfc8785.dumps(document)
    return encoded


def format_time(moment: datetime) -> str:
    """The one text form of a time in the chain: UTC, microseconds, ``Z``
    (``%Y-%m-%dT%H:%M:%S.%fZ``, written by isoformat, which is several times faster)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime in the audit chain")
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(slots=True)
class EventRecord:
    """An event as exported and as verified: exactly the hashed fields, plus ``hash``."""

    seq: int
    prev_hash: str
    occurred_at: str
    action: str
    actor: dict[str, Any]
    refs: dict[str, Any]
    data: dict[str, Any]
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "occurred_at": self.occurred_at,
            "action": self.action,
            "actor": self.actor,
            "refs": self.refs,
            "data": self.data,
        }

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical_body()).hexdigest()

    def canonical_body(self) -> bytes:
        """``canonical(self.body())``, checking the fixed fields' types directly rather
        than walking the whole body (the verifier's inner loop); anything unusual takes
        the general path. orjson's integer check (53 bits) runs in C."""
        actor, refs, seq = self.actor, self.refs, self.seq
        if (
            type(seq) is int
            and type(self.prev_hash) is str
            and type(self.occurred_at) is str
            and type(self.action) is str
            and type(actor) is dict
            and type(refs) is dict
            and actor.keys() == _ACTOR_KEYS
            and refs.keys() == _REF_KEY_SET
            and _flat(actor)
            and _flat(refs)
            and flat_data(self.data)
        ):
            try:
                return orjson.dumps(self.body(), option=_FAST_OPTIONS)
            except orjson.JSONEncodeError:
                pass  # an integer beyond 2**53, a lone surrogate: the general path decides
        return canonical(self.body())

    def to_json(self) -> dict[str, Any]:
        return {"type": "event", **self.body(), "hash": self.hash}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EventRecord:
        return cls(
            seq=obj["seq"],
            prev_hash=obj["prev_hash"],
            occurred_at=obj["occurred_at"],
            action=obj["action"],
            actor=obj["actor"],
            refs=obj["refs"],
            data=obj["data"],
            hash=obj["hash"],
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement about the log at size ``seq``.

    Tree checkpoints (``note`` set) sign the Merkle ``root`` (base64) as a C2SP signed
    note; ``hash`` (the chain head) and ``time`` ride along unsigned. Version 1 ones sign
    ``hash`` and ``time`` (JCS statement, ``signature``) and have no root.
    """

    seq: int
    hash: str
    time: str
    key_id: str
    signature: str = field(default="")
    root: str | None = None
    note: str | None = None

    @property
    def root_bytes(self) -> bytes | None:
        if self.root is None:
            return None
        try:
            return base64.b64decode(self.root, validate=True)
        except ValueError:
            return None

    def statement(self) -> bytes:
        return canonical(
            {
                "type": CHECKPOINT_TYPE,
                "version": 1,
                "seq": self.seq,
                "hash": self.hash,
                "time": self.time,
                "key_id": self.key_id,
            }
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "checkpoint",
            "seq": self.seq,
            "hash": self.hash,
            "time": self.time,
            "key_id": self.key_id,
            "signature": self.signature,
        }
        if self.note is not None:
            out["root"] = self.root
            out["note"] = self.note
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Checkpoint:
        note = obj.get("note")
        return cls(
            seq=int(obj["seq"]),
            hash=str(obj["hash"]),
            time=str(obj["time"]),
            key_id=str(obj["key_id"]),
            signature=str(obj["signature"]),
            root=None if note is None else str(obj["root"]),
            note=None if note is None else str(note),
        )


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key as raw base64 (32 bytes) or PEM (SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = load_pem_public_key(stripped.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(stripped, validate=True))


class Signer:
    """Signs checkpoints with the Ed25519 key derived from settings; the key never leaves
    memory and is never written to the database. ``origin`` names the log in its tree
    checkpoints (and is their note key name); by default ``ruta-audit/<key id>``."""

    def __init__(self, seed: bytes, origin: str | None = None) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._private.public_key()
        self.key_id = key_id_of(self.public_key)
        self.origin = origin or f"ruta-audit/{self.key_id}"

    def sign_tree(self, size: int, root: bytes, head_hash: str, moment: datetime) -> Checkpoint:
        """A C2SP checkpoint: the tree of ``size`` events has ``root``."""
        text = note.TreeHead(self.origin, size, root).text()
        signed = note.sign(text, self.origin, self._private)
        return Checkpoint(
            seq=size,
            hash=head_hash,
            time=format_time(moment),
            key_id=self.key_id,
            signature=signed.rstrip("\n").rsplit(" ", 1)[1],
            root=base64.b64encode(root).decode(),
            note=signed,
        )

    def sign(self, seq: int, head_hash: str, moment: datetime) -> Checkpoint:
        unsigned = Checkpoint(seq=seq, hash=head_hash, time=format_time(moment), key_id=self.key_id)
        signature = base64.b64encode(self._private.sign(unsigned.statement())).decode()
        return Checkpoint(
            seq=seq, hash=head_hash, time=unsigned.time, key_id=self.key_id, signature=signature
        )

    def sign_document(self, document: dict[str, Any]) -> str:
        """Base64 Ed25519 signature over the document's canonical JSON."""
        return base64.b64encode(self._private.sign(canonical(document))).decode()


def document_signature_valid(
    document: dict[str, Any], signature: str, public_key: Ed25519PublicKey
) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), canonical(document))
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """The checkpoint was signed by ``public_key``, and (a tree checkpoint) its ``seq`` and
    ``root`` are the ones its signed note states."""
    if checkpoint.note is not None:
        try:
            head = note.open_checkpoint(checkpoint.note, public_key)
        except note.NoteError:
            return False
        return head.size == checkpoint.seq and head.root == checkpoint.root_bytes
    if checkpoint.key_id != key_id_of(public_key):
        return False
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint.statement())
    except (InvalidSignature, ValueError):
        return False
    return True
