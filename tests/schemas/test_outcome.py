"""The receipt intake writes with orjson is the receipt the model would write, byte for byte."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from app.schemas.examples import RECEIPT
from app.schemas.outcome import ScreeningDetail, ScreeningReceipt, receipt_json
from tests.conftest import KeyFactory, bearer
from tests.factories import screening
from tests.strategies import json_values
from tests.test_openapi import document, validator

offsets = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=-5))]) | st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)
moments = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    offsets,
)


DECISION: dict[str, Any] = RECEIPT["decision"]


def _decision(
    referrals: list[dict[str, Any]],
    inputs: dict[str, Any],
    notification: str | None,
    facts_as_of: str | None,
) -> dict[str, Any]:
    trace = {**DECISION["trace"], "facts_as_of": facts_as_of}
    trace["fired"] = [{**trace["fired"][0], "inputs": inputs}]
    return {
        **DECISION,
        "notification_recipient": notification,
        "non_identifying_notification": notification is not None,
        "referrals": referrals,
        "trace": trace,
    }


_referrals = st.lists(
    st.builds(
        lambda base, partner, human: {
            **base,
            "partner": partner,
            "needs_human": human is not None,
            "human_reason": human,
            "respond_by": base["respond_by"] if partner else None,
        },
        st.just(DECISION["referrals"][0]),
        st.none() | st.just(DECISION["referrals"][0]["partner"]),
        st.none() | st.text(max_size=20),
    ),
    max_size=3,
)
#: Decisions shaped as ``decision_dict`` writes them (the receipt's model types them),
#: with any values where the trace holds free-form ones.
decisions = st.builds(
    _decision,
    _referrals,
    st.dictionaries(st.text(max_size=12), json_values(), max_size=6),
    st.none() | st.text(min_size=1, max_size=20),
    st.none() | st.just(DECISION["trace"]["facts_as_of"]),
)


def _both(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    return receipt_json(**fields), ScreeningReceipt(**fields).model_dump_json().encode()


@given(
    screened_at=moments,
    received_at=moments,
    replayed=st.booleans(),
    organisation=st.text(),
    decision=st.none() | decisions,
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
    # Beyond orjson's 64-bit integers:
    fields["decision"] = _decision([], {"big": 2**70}, None, None)
    fast, model = _both(fields)
    assert fast == model


def _published(path: str, method: str, status: str) -> Any:
    doc = document()
    media = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
    return validator(doc, media["schema"])


async def test_real_answers_validate_against_the_published_schemas(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """A decided screening's receipt (written by orjson), its replay and its read-back
    (written by the models), and an auditor's explanation of one of its referrals, are
    what the document says a generated client gets."""
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    auditor = bearer(await api_key("auditor"))
    body = screening(subject__age=15)
    created = await http.post("/v1/screenings", json=body, headers=clinic)
    replayed = await http.post("/v1/screenings", json=body, headers=clinic)
    read = await http.get(f"/v1/screenings/{body['id']}", headers=clinic)
    assert (created.status_code, replayed.status_code, read.status_code) == (201, 200, 200)
    for answer, (path, method, status) in (
        (created, ("/v1/screenings", "post", "201")),
        (replayed, ("/v1/screenings", "post", "200")),
        (read, ("/v1/screenings/{screening_id}", "get", "200")),
    ):
        errors = [str(e) for e in _published(path, method, status).iter_errors(answer.json())]
        assert not errors, (path, status, errors[:3])
    # The fast path writes what the model would.
    fresh = ScreeningReceipt.model_validate_json(created.content)
    assert fresh.model_dump_json().encode() == created.content
    assert fresh.decision is not None
    assert fresh.decision.referrals
    assert ScreeningDetail.model_validate_json(read.content).decision == fresh.decision
    referral = fresh.decision.referrals[0].id
    explained = await http.get(f"/v1/referrals/{referral}", headers=auditor)
    assert explained.status_code == 200, explained.text
    check = _published("/v1/referrals/{referral_id}", "get", "200")
    assert not [str(e) for e in check.iter_errors(explained.json())]
