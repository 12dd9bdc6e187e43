"""``rules diff``: which screenings' referrals change between two rule files, and how."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from app.rules import DEFAULT_RULES_PATH
from app.rules.corpus import CorpusError
from app.rules.diff import diff_rule_sets
from tests.factories import adult_consenting, screening


def changed_protocol(tmp_path: Path) -> Path:
    text = DEFAULT_RULES_PATH.read_text()
    # STI symptoms become routine.
    old = (
        "  - id: sti-symptoms\n    description: Symptoms of a sexually transmitted infection need "
        "medical care within 72 hours.\n    protocol: [7]\n    guideline: IOM Handbook on Direct "
        "Assistance for Victims of Trafficking (2007), health and well-being\n    service: "
        "medical\n    urgency: urgent"
    )
    assert old in text
    text = text.replace(old, old.replace("urgency: urgent", "urgency: routine"))
    path = tmp_path / "new.yaml"
    path.write_text(text.replace('version: "2026.12.1"', 'version: "2026.12.2"'))
    return path


def test_same_rules_change_nothing() -> None:
    report = diff_rule_sets(DEFAULT_RULES_PATH, DEFAULT_RULES_PATH, "generated:3000", workers=1)
    assert report.screenings == 3000
    assert report.changed == []


def test_changed_rule_is_reported_with_counts(tmp_path: Path) -> None:
    new = changed_protocol(tmp_path)
    report = diff_rule_sets(DEFAULT_RULES_PATH, new, "generated:3000", workers=1)
    summary = report.counts()
    assert summary["changed_screenings"] == len(report.changed) > 0
    kinds = {c["change"] for item in report.changed for c in item["changes"]}
    assert "urgency" in kinds
    for item in report.changed:
        for change in item["changes"]:
            if change["change"] == "urgency":
                assert (change["service"], change["old"], change["new"]) == (
                    "medical",
                    "urgent",
                    "routine",
                )
    data = report.as_json(limit=5)
    assert data["new"]["version"] == "2026.12.2"
    assert len(data["changes"]) == 5
    json.dumps(data)


def test_workers_and_chunking_do_not_change_the_result(tmp_path: Path) -> None:
    new = changed_protocol(tmp_path)
    one = diff_rule_sets(DEFAULT_RULES_PATH, new, "generated:12000", workers=1)
    two = diff_rule_sets(DEFAULT_RULES_PATH, new, "generated:12000", workers=2)
    assert one.changed == two.changed


def test_added_and_removed_services(tmp_path: Path) -> None:
    text = DEFAULT_RULES_PATH.read_text()
    text = text.replace("    service: legal\n", "    service: protection\n", 1)
    new = tmp_path / "moved.yaml"
    new.write_text(text)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        json.dumps(
            adult_consenting(safety={}, needs_expressed=[], consent__scopes=["legal", "protection"])
        )
        + "\n"
    )
    report = diff_rule_sets(DEFAULT_RULES_PATH, new, str(corpus), workers=1)
    [item] = report.changed
    assert item["screening"] == "line 1"
    kinds = {(c["service"], c["change"]) for c in item["changes"]}
    assert ("protection", "added") in kinds


def test_jsonl_corpus_strict_and_fast_agree(tmp_path: Path) -> None:
    new = changed_protocol(tmp_path)
    corpus = tmp_path / "c.jsonl"
    body = adult_consenting(health={"sti_symptoms": True}, needs_expressed=[])
    corpus.write_text("\n".join(json.dumps(body) for _ in range(20)) + "\n")
    fast = diff_rule_sets(DEFAULT_RULES_PATH, new, str(corpus), workers=1)
    strict = diff_rule_sets(DEFAULT_RULES_PATH, new, str(corpus), workers=1, strict=True)
    assert fast.changed == strict.changed
    assert len(fast.changed) == 20


def test_invalid_corpus_line_is_named_not_echoed(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    bad = screening(subject__age="CANARY")
    corpus.write_text(json.dumps(screening()) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(CorpusError) as info:
        diff_rule_sets(DEFAULT_RULES_PATH, DEFAULT_RULES_PATH, str(corpus), workers=1)
    assert ":2:" in str(info.value)
    assert "CANARY" not in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RUTA_TIMING_TESTS") != "1",
    reason="timing test: set RUTA_TIMING_TESTS=1 on a quiet machine (or run python -m bench.rules)",
)
def test_100k_generated_screenings_under_10_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    report = diff_rule_sets(DEFAULT_RULES_PATH, changed_protocol(tmp_path), "generated:100000")
    assert report.screenings == 100_000
    assert time.perf_counter() - started < 10
