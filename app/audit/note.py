"""C2SP signed notes (c2sp.org/signed-note) and tlog checkpoints (c2sp.org/tlog-checkpoint).

A checkpoint is the note text::

    <origin>\\n<tree size>\\n<base64 root hash>\\n

signed by the log's Ed25519 key: a blank line, then ``— <key name> <base64(key ID ||
signature)>``, where the key ID is the first four bytes of ``SHA-256(key name || 0x0A ||
0x01 || public key)`` and the signature is Ed25519 over the note text. The key name is the
origin. Tools made for transparency logs (Go's sumdb/note, Trillian, Tessera, witnesses)
read these as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
EM_DASH = "\u2014"
#: Key names: non-empty, no Unicode spaces, no plus.
NAME_RE = re.compile(r"[^\s+]+")
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteError(ValueError):
    """Not a well-formed note or checkpoint, or no valid signature by the trusted key."""


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + _raw(public_key)).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The note verifier key string (``name+hex key ID+base64(0x01 || key)``)."""
    encoded = base64.b64encode(ED25519 + _raw(public_key)).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def sign(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note: ``text`` (ending in a newline), a blank line, one signature line."""
    if not NAME_RE.fullmatch(name):
        raise NoteError("a key name has no spaces and no '+'")
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("a note text ends with a newline and has no empty line")
    signature = private_key.sign(text.encode())
    blob = base64.b64encode(key_id(name, private_key.public_key()) + signature).decode()
    return f"{text}\n{EM_DASH} {name} {blob}\n"


def split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The text and its (key name, base64-decoded signature blob) lines."""
    if any(ord(c) < 0x20 and c != "\n" for c in note) or not note.endswith("\n"):
        raise NoteError("not a signed note")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("a signed note has a blank line before its signatures")
    text, lines = note[: cut + 1], note[cut + 2 :].splitlines()
    signatures = []
    for line in lines:
        dash, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if dash != EM_DASH or not NAME_RE.fullmatch(name):
            raise NoteError("a signature line is '— <key name> <base64>'")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("a signature is base64") from None
        if len(blob) < 5:
            raise NoteError("a signature holds a key ID and a signature")
        signatures.append((name, blob))
    if not signatures or len(signatures) > 100:
        raise NoteError("a signed note has between 1 and 100 signatures")
    return text, signatures


def open_note(note: str, public_key: Ed25519PublicKey, name: str | None = None) -> str:
    """The text of ``note`` if the trusted key signed it (under ``name``, if given).
    Signatures by other keys are ignored, as the specification requires."""
    text, signatures = split(note)
    verified = False
    for signer, blob in signatures:
        if name is not None and signer != name:
            continue
        if blob[:4] != key_id(signer, public_key):
            continue
        try:
            public_key.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise NoteError("a signature by the trusted key does not verify") from None
        verified = True
    if not verified:
        raise NoteError("no signature by the trusted key")
    return text


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A checkpoint's three mandatory lines."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> TreeHead:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise NoteError("a checkpoint is at least three non-empty lines")
        origin, size, root = lines[0], lines[1], lines[2]
        if not _SIZE_RE.fullmatch(size):
            raise NoteError("a checkpoint's tree size is a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("a checkpoint's root hash is base64") from None
        if len(digest) != 32 or base64.b64encode(digest).decode() != root:
            raise NoteError("a checkpoint's root hash is 32 bytes of canonical base64")
        return cls(origin, int(size), digest)


def open_checkpoint(note: str, public_key: Ed25519PublicKey) -> TreeHead:
    """A checkpoint signed by the trusted key under its origin (the key name)."""
    head = TreeHead.parse(split(note)[0])
    open_note(note, public_key, head.origin)
    return head
