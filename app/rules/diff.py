"""Impact of a rule change: replay a corpus through two rule sets and report what changes.

Work is split in chunks over worker processes (2 on the project's machines); each worker
compiles both rule sets once, from their text, so a file edited mid-run cannot mix versions.
A generated corpus is seeded per chunk, so the same ``generated:N`` and seed give the same
screenings whatever the number of workers.
"""

from __future__ import annotations

import gc
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.rules.corpus import (
    CorpusError,
    ScreeningView,
    generate_document,
    parse_corpus_spec,
    screening_view,
)
from app.rules.engine import RuleSet, Summary, rule_set_from_text
from app.schemas.screening import ScreeningIn

CHUNK = 5_000
_CACHE: dict[str, RuleSet] = {}


def _rule_set(text: str, name: str) -> RuleSet:
    import hashlib

    key = hashlib.sha256(text.encode()).hexdigest() + name
    if key not in _CACHE:
        _CACHE[key] = rule_set_from_text(text, source_name=name)
    return _CACHE[key]


def compare(old: Summary, new: Summary) -> list[dict[str, Any]]:
    """How the referrals changed, service by service. Empty when nothing changed."""
    changes: list[dict[str, Any]] = []
    old_refs, old_note = old
    new_refs, new_note = new
    for service in sorted(set(old_refs) | set(new_refs)):
        a, b = old_refs.get(service), new_refs.get(service)
        if a == b:
            continue
        if a is None:
            assert b is not None
            changes.append(
                {"service": service, "change": "added", "urgency": b[0], "legal_basis": b[1]}
            )
            continue
        if b is None:
            changes.append(
                {"service": service, "change": "removed", "urgency": a[0], "legal_basis": a[1]}
            )
            continue
        for index, kind in ((0, "urgency"), (1, "legal_basis"), (2, "identifying")):
            if a[index] != b[index]:
                changes.append(
                    {"service": service, "change": kind, "old": a[index], "new": b[index]}
                )
        if a[3] != b[3]:
            changes.append(
                {
                    "service": str(service),
                    "change": "flags",
                    "added": sorted(f.value for f in b[3] - a[3]),
                    "removed": sorted(f.value for f in a[3] - b[3]),
                }
            )
    if old_note != new_note:
        changes.append({"change": "non_identifying_notification", "old": old_note, "new": new_note})
    return changes


@dataclass
class ChunkResult:
    count: int
    changed: list[dict[str, Any]]


def _diff_views(old: RuleSet, new: RuleSet, views: list[tuple[str, Any]]) -> ChunkResult:
    changed = []
    old_summary, new_summary = old.summary, new.summary
    for label, view in views:
        a = old_summary(view)
        b = new_summary(view)
        if a != b:
            changed.append({"screening": label, "changes": compare(a, b)})
    return ChunkResult(len(views), changed)


def _run_chunk(fn: Callable[..., ChunkResult], *args: Any) -> ChunkResult:
    """Run a chunk with the cyclic GC paused: a chunk allocates many short-lived objects and
    no cycles, and the collections they trigger cost more than the work itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if was_enabled:
            gc.enable()


def _generated_chunk(
    old_text: tuple[str, str], new_text: tuple[str, str], seed: int, chunk: int, count: int
) -> ChunkResult:
    rng = random.Random(f"{seed}:{chunk}")  # noqa: S311 - test data, not secrets
    start = chunk * CHUNK
    views = [
        (f"generated#{start + i}", generate_document(rng, ScreeningView)) for i in range(count)
    ]
    return _diff_views(_rule_set(*old_text), _rule_set(*new_text), views)


def _file_chunk(
    old_text: tuple[str, str],
    new_text: tuple[str, str],
    path: str,
    lines: list[tuple[int, str]],
    strict: bool,
) -> ChunkResult:
    views: list[tuple[str, Any]] = []
    for number, line in lines:
        try:
            if strict:
                view: Any = ScreeningIn.model_validate_json(line)
            else:
                document = json.loads(line)
                if not isinstance(document, dict):
                    raise ValueError("not an object")
                view = screening_view(document)
        except (ValueError, ValidationError) as exc:
            what = str(exc) if isinstance(exc, ValueError) and not strict else "invalid"
            if isinstance(exc, json.JSONDecodeError):
                what = "not JSON"
            raise CorpusError(f"{path}:{number}: invalid screening ({what})") from None
        views.append((f"line {number}", view))
    return _diff_views(_rule_set(*old_text), _rule_set(*new_text), views)


@dataclass
class DiffReport:
    old: dict[str, str]
    new: dict[str, str]
    corpus: str
    screenings: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def counts(self) -> dict[str, Any]:
        by_kind: Counter[str] = Counter()
        by_service: dict[str, Counter[str]] = {}
        for item in self.changed:
            for change in item["changes"]:
                kind = change["change"]
                if kind in ("urgency", "legal_basis"):
                    kind = f"{kind}:{change['old']}->{change['new']}"
                by_kind[change["change"]] += 1
                service = change.get("service", "-")
                by_service.setdefault(service, Counter())[kind] += 1
        return {
            "screenings": self.screenings,
            "changed_screenings": len(self.changed),
            "changes_by_kind": dict(sorted(by_kind.items())),
            "changes_by_service": {
                s: dict(sorted(c.items())) for s, c in sorted(by_service.items())
            },
        }

    def as_json(self, limit: int | None = None) -> dict[str, Any]:
        changed = self.changed if limit is None else self.changed[:limit]
        return {
            "old": self.old,
            "new": self.new,
            "corpus": self.corpus,
            "summary": self.counts(),
            "changes": changed,
            "changes_listed": len(changed),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


ProgressCallback = Callable[[int, int], None]


def diff_rule_sets(
    old_path: Path,
    new_path: Path,
    corpus: str,
    *,
    seed: int = 0,
    workers: int = 2,
    strict: bool = False,
    progress: ProgressCallback | None = None,
) -> DiffReport:
    """Replay ``corpus`` (``generated[:N]`` or a JSONL file) through both rule files.

    Both files are validated first (``RuleFileError``); a bad corpus raises ``CorpusError``.
    """
    started = time.perf_counter()
    old_text = (old_path.read_text(encoding="utf-8"), str(old_path))
    new_text = (new_path.read_text(encoding="utf-8"), str(new_path))
    old, new = _rule_set(*old_text), _rule_set(*new_text)
    report = DiffReport(
        old={"file": str(old_path), "version": old.version, "sha256": old.sha256},
        new={"file": str(new_path), "version": new.version, "sha256": new.sha256},
        corpus=corpus,
    )
    kind, target = parse_corpus_spec(corpus)
    jobs: list[tuple[Any, ...]] = []
    if kind == "generated":
        assert isinstance(target, int)
        for chunk, start in enumerate(range(0, target, CHUNK)):
            count = min(CHUNK, target - start)
            jobs.append((_generated_chunk, old_text, new_text, seed, chunk, count))
        total = target
    else:
        assert isinstance(target, Path)
        try:
            with target.open(encoding="utf-8") as handle:
                numbered = [(n, line) for n, line in enumerate(handle, start=1) if line.strip()]
        except OSError as exc:
            raise CorpusError(f"{target}: cannot read ({exc.strerror})") from None
        for start in range(0, len(numbered), CHUNK):
            chunk_lines = numbered[start : start + CHUNK]
            jobs.append((_file_chunk, old_text, new_text, str(target), chunk_lines, strict))
        total = len(numbered)
    done = 0
    results: list[ChunkResult] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            result = _run_chunk(*job)
            results.append(result)
            done += result.count
            if progress:
                progress(done, total)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_chunk, *job) for job in jobs]
            for future in futures:
                result = future.result()
                results.append(result)
                done += result.count
                if progress:
                    progress(done, total)
    for result in results:
        report.screenings += result.count
        report.changed.extend(result.changed)
    report.elapsed_seconds = time.perf_counter() - started
    return report
