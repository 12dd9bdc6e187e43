"""The retry schedule, run in full on a simulated clock."""

from __future__ import annotations

import random

import pytest

from app.delivery import policy
from app.delivery.policy import Outcome, Result


@pytest.mark.parametrize("seed", range(20))
def test_the_full_schedule_covers_72_hours_inside_its_jitter_windows(seed: int) -> None:
    rng = random.Random(seed)
    elapsed = 0.0
    attempts = 1
    failure = Result(status_code=503)
    while True:
        delay = policy.next_delay(attempts, failure, rng)
        if delay is None:
            break
        nominal = policy.SCHEDULE[attempts - 1]
        assert nominal * 0.8 <= delay <= nominal * 1.2
        elapsed += delay
        attempts += 1
    assert attempts == policy.max_attempts()
    assert elapsed >= 72 * 3600


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.delivered),
        (204, Outcome.delivered),
        (500, Outcome.retry),
        (503, Outcome.retry),
        (429, Outcome.retry),
        (408, Outcome.retry),
        (None, Outcome.retry),
        (400, Outcome.rejected),
        (401, Outcome.rejected),
        (404, Outcome.rejected),
        (301, Outcome.rejected),
        (410, Outcome.gone),
    ],
)
def test_classification(status: int | None, outcome: Outcome) -> None:
    assert policy.classify(Result(status_code=status)) is outcome


def test_retry_after_is_honoured_within_bounds() -> None:
    rng = random.Random(1)
    assert policy.next_delay(1, Result(429, retry_after=600), rng) == 600
    assert policy.next_delay(1, Result(429, retry_after=10**9), rng) == policy.RETRY_AFTER_MAX
    small = policy.next_delay(1, Result(429, retry_after=0), rng)
    assert small is not None
    assert small >= policy.RETRY_AFTER_MIN
    assert policy.parse_retry_after("120") == 120
    assert policy.parse_retry_after("garbage") is None


def test_terminal_results_stop_at_once() -> None:
    assert policy.next_delay(1, Result(400)) is None
    assert policy.next_delay(1, Result(410)) is None
    assert policy.next_delay(policy.max_attempts(), Result(500)) is None
