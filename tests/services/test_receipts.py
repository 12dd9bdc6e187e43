"""Receipt shaping (app/services/receipts.py): the Prefer header and the minimal receipt."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from app.schemas import examples
from app.schemas.outcome import MinimalReceipt
from app.services.receipts import minimal_json, minimal_receipt, prefers_minimal


@pytest.mark.parametrize(
    ("header", "minimal"),
    [
        ("return=minimal", True),
        ("RETURN=Minimal", True),
        ('return="minimal"', True),
        ("respond-async, return=minimal; foo=bar", True),
        ("return=minimal, return=representation", True),  # the first one counts
        ("return=representation, return=minimal", False),
        ("return=representation", False),
        ("respond-async", False),
        ("return", False),
        ("minimal", False),
        ("", False),
        (None, False),
    ],
)
def test_prefer_is_read_as_rfc_7240_says(header: str | None, minimal: bool) -> None:
    assert prefers_minimal(header) is minimal


def test_a_received_screening_has_no_referrals_yet() -> None:
    screening_id = uuid.uuid4()
    receipt = minimal_receipt(screening_id, replayed=False, decision=None, locale="es")
    assert json.loads(minimal_json(receipt)) == {
        "id": str(screening_id),
        "href": f"/v1/screenings/{screening_id}",
        "status": "received",
        "replayed": False,
        "language": "es",
        "referrals": [],
    }


def test_the_deadline_is_cut_to_the_second_in_utc() -> None:
    decision = copy.deepcopy(examples.DECISION_VIEW)
    decision["referrals"][0]["respond_by"] = "2026-11-21T09:52:10.999999-05:00"
    receipt = minimal_receipt(uuid.uuid4(), replayed=False, decision=decision, locale="en")
    assert receipt.referrals[0].respond_by == "2026-11-21T14:52:10Z"


def test_a_reason_missing_in_the_language_falls_back_to_english() -> None:
    decision = copy.deepcopy(examples.DECISION_VIEW)
    reason = decision["referrals"][0]["reasons"][0]
    reason["text"] = {"en": "Only English."}
    receipt = minimal_receipt(uuid.uuid4(), replayed=False, decision=decision, locale="es")
    assert receipt.referrals[0].reasons == ["Only English."]


def test_defaults_are_left_out_and_a_value_is_kept() -> None:
    decision = copy.deepcopy(examples.DECISION_VIEW)
    decision["non_identifying_notification"] = True
    decision["referrals"][0].update(partner=None, respond_by=None, needs_human=True)
    receipt = minimal_receipt(uuid.uuid4(), replayed=True, decision=decision, locale="es")
    sent = json.loads(minimal_json(receipt))
    assert sent["non_identifying_notification"] is True
    [referral] = sent["referrals"]
    assert referral["needs_human"] is True
    assert "partner" not in referral
    assert "respond_by" not in referral
    assert MinimalReceipt.model_validate(sent) == receipt
