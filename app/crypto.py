"""Envelope encryption of personal data at rest.

Each subject has a random 256-bit data key (DEK). The DEK is stored only wrapped by the
key-encryption key (KEK) from settings, with AES-GCM. Personal fields are encrypted under
the DEK with AES-GCM, and the associated data names the table, column and row, so a
ciphertext copied into another row or column does not decrypt. Rotating the KEK re-wraps
DEKs and never touches the data; deleting a DEK erases the subject (crypto-shredding).

``cryptography``'s AESGCM is used rather than anything hand-rolled: it is the Python
Cryptographic Authority's binding to OpenSSL.
"""

from __future__ import annotations

import hashlib
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
FORMAT_V1 = b"\x01"


class DecryptionError(Exception):
    """A ciphertext failed authentication: wrong key, wrong row, or altered."""


def kek_id(kek: bytes) -> str:
    return hashlib.sha256(b"ruta-kek-id|" + kek).hexdigest()[:16]


def new_dek() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _aad(table: str, column: str, row_id: uuid.UUID | str) -> bytes:
    return f"ruta|{table}|{column}|{row_id}".encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
        raise DecryptionError("not a Ruta ciphertext")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication") from None


def wrap_dek(kek: bytes, dek: bytes, subject_id: uuid.UUID) -> bytes:
    return _seal(kek, dek, _aad("subjects", "wrapped_dek", subject_id))


def unwrap_dek(kek: bytes, wrapped: bytes, subject_id: uuid.UUID) -> bytes:
    return _open(kek, wrapped, _aad("subjects", "wrapped_dek", subject_id))


def encrypt_field(
    dek: bytes, plaintext: bytes, *, table: str, column: str, row_id: uuid.UUID | str
) -> bytes:
    return _seal(dek, plaintext, _aad(table, column, row_id))


def decrypt_field(
    dek: bytes, blob: bytes, *, table: str, column: str, row_id: uuid.UUID | str
) -> bytes:
    return _open(dek, blob, _aad(table, column, row_id))


def unwrap_with_any(
    keks: dict[str, bytes], wrapped: bytes, subject_id: uuid.UUID, kek_hint: str | None
) -> bytes:
    """Unwrap with the KEK named by ``kek_hint``, falling back to each known KEK."""
    ordered = ([keks[kek_hint]] if kek_hint in keks else []) + [
        k for i, k in keks.items() if i != kek_hint
    ]
    for kek in ordered:
        try:
            return unwrap_dek(kek, wrapped, subject_id)
        except DecryptionError:
            continue
    raise DecryptionError("no configured key-encryption key unwraps this data key")
