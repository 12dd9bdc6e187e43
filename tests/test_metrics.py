from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from app.metrics import child


def test_a_child_is_the_labelled_metric_looked_up_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("test_child_total", "A test counter.", ["a", "b"], registry=registry)
    first = child(counter, "x", "y")
    assert first is child(counter, "x", "y") is counter.labels("x", "y")
    assert child(counter, "x", "z") is not first
    first.inc()
    child(counter, "x", "y").inc(2)
    assert counter.labels("x", "y")._value.get() == 3
