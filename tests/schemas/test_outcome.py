"""The receipt intake writes with orjson is the receipt the model would write, byte for byte."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.schemas.examples import RECEIPT
from app.schemas.outcome import ScreeningReceipt, receipt_json
from tests.strategies import json_values

offsets = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=-5))]) | st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)
moments = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    offsets,
)


def _both(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    return receipt_json(**fields), ScreeningReceipt(**fields).model_dump_json().encode()


@given(
    screened_at=moments,
    received_at=moments,
    replayed=st.booleans(),
    organisation=st.text(),
    decision=st.none() | st.dictionaries(st.text(max_size=12), json_values(), max_size=6),
)
def test_receipt_json_is_the_models_json(
    screened_at: datetime,
    received_at: datetime,
    replayed: bool,
    organisation: str,
    decision: dict[str, Any] | None,
) -> None:
    fast, model = _both(
        {
            "id": uuid.uuid4(),
            "organisation": organisation,
            "status": "decided" if decision is not None else "received",
            "schema_version": "1",
            "screened_at": screened_at,
            "received_at": received_at,
            "replayed": replayed,
            "decision": decision,
        }
    )
    assert fast == model


def test_the_documented_receipt_round_trips() -> None:
    example = ScreeningReceipt.model_validate(RECEIPT)
    fast, model = _both(dict(example))
    assert fast == model
    assert ScreeningReceipt.model_validate_json(fast) == example


def test_a_value_orjson_cannot_write_falls_back_to_the_model() -> None:
    fields = dict(ScreeningReceipt.model_validate(RECEIPT))
    fields["decision"] = {"big": 2**70}  # beyond orjson's 64-bit integers
    fast, model = _both(fields)
    assert fast == model
