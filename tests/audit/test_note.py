"""C2SP signed notes and checkpoints, held to the reference implementation's vectors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.audit import note
from app.audit.chain import Signer, signature_valid

# golang.org/x/mod/sumdb/note's test key and note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    "dngotpRZb6KE6RyyBwJnAM=\n"
)
GO_PRIVATE = Ed25519PrivateKey.from_private_bytes(base64.b64decode(GO_SKEY.split("+", 4)[4])[1:])


def test_the_reference_note_byte_for_byte() -> None:
    public = GO_PRIVATE.public_key()
    assert note.verifier_key("PeterNeumann", public) == GO_VKEY
    signed = note.sign(GO_TEXT, "PeterNeumann", GO_PRIVATE)
    assert signed == GO_TEXT + "\n" + GO_SIGNATURE
    assert note.open_note(signed, public) == GO_TEXT
    with pytest.raises(note.NoteError, match="does not verify"):
        note.open_note(signed.replace("cryptography", "cryptographY"), public)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(note.NoteError, match="no signature by the trusted key"):
        note.open_note(signed, other)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "text without signatures\n",
        "text\n\nno dash line\n",
        "text\n\n\u2014 name !!!notbase64\n",
        "text\n\n\u2014 na me AAAA\n",
        "te\x01xt\n\n\u2014 name AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_refused(bad: str) -> None:
    with pytest.raises(note.NoteError):
        note.open_note(bad, GO_PRIVATE.public_key())


@pytest.mark.parametrize(
    "text",
    [
        "origin\n10\n",  # two lines
        "origin\n010\nSBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=\n",  # a leading zero
        "origin\n10\nSBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I\n",  # not canonical base64
        "origin\n10\nAAAA\n",  # not 32 bytes
        "\n10\nSBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=\n",  # empty origin
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(note.NoteError):
        note.TreeHead.parse(text)


def test_a_tree_checkpoint_binds_its_seq_and_root() -> None:
    signer = Signer(b"\x05" * 32, "ruta.example.org/audit")
    checkpoint = signer.sign_tree(7, b"\x11" * 32, "ab" * 32, datetime(2026, 12, 1, tzinfo=UTC))
    assert checkpoint.note is not None
    assert checkpoint.note.startswith("ruta.example.org/audit\n7\nERERERERERER")
    assert signature_valid(checkpoint, signer.public_key)
    # The JSON fields must say what the note says; the unsigned chain hash may not matter.
    from dataclasses import replace

    assert not signature_valid(replace(checkpoint, seq=8), signer.public_key)
    assert not signature_valid(replace(checkpoint, root="ESE" + "R" * 40 + "="), signer.public_key)
    assert not signature_valid(checkpoint, Signer(b"\x06" * 32).public_key)
