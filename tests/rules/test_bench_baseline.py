"""The benchmark's hand-written if-chain must decide exactly like the engine (not timed)."""

from __future__ import annotations

from app.rules import load_rule_set
from app.rules.corpus import generate_screenings
from bench.rules import HandWritten, run


def test_hand_written_baseline_agrees_with_the_engine() -> None:
    rule_set = load_rule_set()
    baseline = HandWritten(rule_set)
    for screening in generate_screenings(4_000, seed=11):
        assert baseline.evaluate(screening) == rule_set.evaluate(screening, trace=False)


def test_benchmark_runs() -> None:
    result = run(count=50, repeat=1)
    assert result["screenings"] == 50
    assert result["ratio_trace_off"] > 0
