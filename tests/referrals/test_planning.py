"""The rows intake builds for the referral service are exactly the tables' rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app.models import Decision, Referral
from app.referrals.planning import NewDecision, NewReferral


@pytest.mark.parametrize(("planned", "model"), [(NewDecision, Decision), (NewReferral, Referral)])
def test_planned_rows_have_exactly_the_tables_columns(planned: Any, model: Any) -> None:
    """A column added to the table (or a field to the plan) without the other fails here,
    before intake would insert a row missing it."""
    fields = [f.name for f in dataclasses.fields(planned)]
    assert set(fields) == set(model.__table__.c.keys())
    assert list(planned.__slots__) == fields  # row() reads them in this order
