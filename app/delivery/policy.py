"""The retry policy: a pure function from an attempt's result to the next delay, or None.

Exponential backoff with ±20% jitter. The nominal schedule covers about 100 hours, so even
with every delay at -20% the retries span more than 72 hours (Svix covers 27.6 h, Standard
Webhooks' example schedule 75.6 h). Retry-After is honoured within bounds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

#: Delay before retry n (n = 1 is the first retry), in seconds.
SCHEDULE: tuple[int, ...] = (
    5,
    30,
    2 * 60,
    10 * 60,
    30 * 60,
    60 * 60,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    *([12 * 3600] * 7),
)
JITTER = 0.2
RETRY_AFTER_MIN = 1
RETRY_AFTER_MAX = 6 * 3600


class Outcome(StrEnum):
    delivered = "delivered"
    retry = "retry"
    rejected = "rejected"  # a terminal 4xx: this partner will not take it
    gone = "gone"  # 410: the endpoint is gone; the partner is paused
    dead = "dead"  # retries exhausted: a dead letter for a person


@dataclass(frozen=True, slots=True)
class Result:
    status_code: int | None
    error: str | None = None
    retry_after: float | None = None


def classify(result: Result) -> Outcome:
    code = result.status_code
    if code is None:
        return Outcome.retry  # timeout, refused connection, TLS or DNS failure
    if 200 <= code < 300:
        return Outcome.delivered
    if code == 410:
        return Outcome.gone
    if code == 429 or code >= 500 or code == 408:
        return Outcome.retry
    return Outcome.rejected


def max_attempts() -> int:
    return len(SCHEDULE) + 1


def next_delay(
    attempts_made: int, result: Result, rng: random.Random | None = None
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts, or None when the
    delivery should stop here (terminal result, or retries exhausted)."""
    if classify(result) is not Outcome.retry:
        return None
    if attempts_made >= max_attempts():
        return None
    nominal = SCHEDULE[attempts_made - 1]
    jittered = nominal * (1 + (rng or random).uniform(-JITTER, JITTER))
    if result.retry_after is not None:
        wanted = min(max(result.retry_after, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
        return max(wanted, jittered) if result.status_code in (429, 503) else jittered
    return jittered


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
