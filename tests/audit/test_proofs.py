"""Proof bundles: made from the database (CLI), checked offline with only the public key
and the checkpoints an auditor kept; an edited event, proof or checkpoint fails."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app import audit
from app.audit.chain import Signer
from app.audit.cli import audit_cli
from app.audit.proofs import verify_bundle
from app.settings import Settings, get_settings
from tests.audit.conftest import seed, use_cli

CASE = uuid.UUID("5b0f7a2e-8c1d-4e0a-9b3f-2d6c1a7e9f10")
REFERRAL = uuid.UUID(int=7 + 3)  # sample_event(3)'s referral


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    yield use_cli(settings, monkeypatch, checkpoint_every=100)
    get_settings.cache_clear()


def _seed(settings: Settings, count: int, disclosures: int = 0) -> None:
    seed(settings, count, disclosures=disclosures, screening=CASE)


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(audit_cli, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def _key(tmp_path: Path) -> str:
    code, out, _ = _invoke("public-key")
    assert code == 0
    path = tmp_path / "ruta-audit.pub"
    path.write_text(out.strip().splitlines()[-1])
    return str(path)


def test_inclusion_proofs_of_a_case(cli_env: Settings, tmp_path: Path) -> None:
    _seed(cli_env, 700, disclosures=3)
    key = _key(tmp_path)
    proof = tmp_path / "case.json"
    code, _, err = _invoke(
        "prove", "inclusion", "--screening-id", str(CASE), "--output", str(proof)
    )
    assert code == 0, err
    bundle = json.loads(proof.read_text())
    assert [e["event"]["action"] for e in bundle["entries"]] == ["personal_data.read"] * 3
    assert bundle["checkpoint"]["seq"] == 703  # a checkpoint of the head, signed for it
    code, out, err = _invoke("verify", "--proof", str(proof), "--public-key", key)
    assert code == 0, err
    assert json.loads(out)["entries_checked"] == 3
    assert err.startswith("PROVEN")

    # One referral's events, against an earlier signed size.
    code, _, err = _invoke(
        "prove", "inclusion", "--referral-id", str(REFERRAL), "--size", "300",
        "--output", str(proof),
    )  # fmt: skip
    assert code == 0, err
    bundle = json.loads(proof.read_text())
    assert bundle["checkpoint"]["seq"] == 300
    assert [e["event"]["seq"] for e in bundle["entries"]] == [3]
    assert _invoke("verify", "--proof", str(proof), "--public-key", key)[0] == 0
    code, _, err = _invoke("prove", "inclusion", "--referral-id", str(REFERRAL), "--size", "301")
    assert (code, "No signed tree checkpoint" in err) == (1, True)


def _mutations(bundle: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    edited = copy.deepcopy(bundle)
    edited["entries"][0]["event"]["data"]["purpose"] = "other"
    yield "event edited", edited
    rehashed = copy.deepcopy(edited)
    from app.audit.chain import EventRecord

    record = EventRecord.from_json(rehashed["entries"][0]["event"])
    rehashed["entries"][0]["event"]["hash"] = record.compute_hash()
    yield "event edited and rehashed", rehashed
    flipped = copy.deepcopy(bundle)
    proof = flipped["entries"][0]["proof"]
    proof[0] = ("B" if proof[0][0] == "A" else "A") + proof[0][1:]
    yield "proof edited", flipped
    moved = copy.deepcopy(bundle)
    moved["entries"][0]["event"]["seq"] += 1
    yield "seq moved", moved
    forged = copy.deepcopy(bundle)
    forged["checkpoint"]["root"] = "A" * 43 + "="
    yield "root edited", forged


def test_an_edited_inclusion_bundle_fails(cli_env: Settings, tmp_path: Path) -> None:
    _seed(cli_env, 300, disclosures=2)
    key = audit.AuditConfig.from_settings(cli_env).signer.public_key
    code, out, _ = _invoke("prove", "inclusion", "--screening-id", str(CASE))
    assert code == 0
    bundle = json.loads(out)
    assert verify_bundle(bundle, key).ok
    for what, bad in _mutations(bundle):
        assert not verify_bundle(bad, key).ok, what
    assert not verify_bundle(bundle, Signer(b"\x01" * 32).public_key).ok


def test_consistency_from_a_kept_checkpoint(cli_env: Settings, tmp_path: Path) -> None:
    _seed(cli_env, 450)
    key = _key(tmp_path)
    kept = tmp_path / "kept.ndjson"
    assert _invoke("checkpoints", "--output", str(kept))[0] == 0
    sizes = [json.loads(line)["seq"] for line in kept.read_text().splitlines()]
    assert sizes == [100, 200, 300, 400, 450]
    _seed(cli_env, 333)
    proof = tmp_path / "consistency.json"
    code, _, err = _invoke("prove", "consistency", "--from-size", "450", "--output", str(proof))
    assert code == 0, err
    code, out, err = _invoke(
        "verify", "--proof", str(proof), "--public-key", key, "--checkpoints", str(kept)
    )
    assert code == 0, err
    assert (json.loads(out)["from_size"], json.loads(out)["size"]) == (450, 783)

    # A kept checkpoint of that size with another root (the log forked, or was rewritten and
    # re-signed): the proof no longer leads from it to the new root.
    bundle = json.loads(proof.read_text())
    signer = audit.AuditConfig.from_settings(cli_env).signer
    from datetime import UTC, datetime

    fork = signer.sign_tree(450, b"\x42" * 32, "00" * 32, datetime.now(UTC))
    report = verify_bundle(bundle, signer.public_key, [fork])
    assert not report.ok
    assert "does not extend" in (report.detail or "")
    # And without any checkpoint of the old size, there is nothing to check against.
    bundle["old"] = None
    report = verify_bundle(bundle, signer.public_key, [])
    assert not report.ok
    assert "pass the one you kept" in (report.detail or "")


def test_a_proof_file_that_is_not_a_bundle_is_unreadable(cli_env: Settings, tmp_path: Path) -> None:
    key = _key(tmp_path)
    for content in (b"", b"{}", b"[1, 2]", b"\xff\xfe"):
        path = tmp_path / "proof.json"
        path.write_bytes(content)
        assert _invoke("verify", "--proof", str(path), "--public-key", key)[0] == 2
    assert _invoke("verify", "--proof", str(tmp_path / "none"), "--public-key", key)[0] == 2
