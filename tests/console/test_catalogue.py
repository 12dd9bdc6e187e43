"""Every word the console shows has its Spanish (the default) and, for coded keys, its
English: the templates' literal messages, and each code a page turns into words."""

from __future__ import annotations

import re
from enum import StrEnum

import pytest

from app.console.web import HERE
from app.i18n import catalogue
from app.partners.matching import Escalation, PassOverReason, UnmatchedReason
from app.referrals.coordination import AssignReason, CloseReason
from app.referrals.state import PartnerStatus, ReferralStatus, RejectReason
from app.reports.aggregates import OUTCOMES, REPORTS, SERVICES, URGENCIES
from app.schemas.decision import LegalBasis, Recipient, ReferralFlag, Urgency
from app.schemas.screening import ServiceCategory

_LITERAL = re.compile(r"""\bt\(\s*(?:"([^"]+)"|'([^']+)')\s*[,)]""")


def _literals() -> set[str]:
    found: set[str] = set()
    for path in [*(HERE / "templates").glob("*.html"), HERE.parent / "reports" / "charts.py"]:
        for match in _LITERAL.finditer(path.read_text(encoding="utf-8")):
            text = match.group(1) or match.group(2)
            if not text.endswith(":"):  # "action:" ~ value: the codes are checked below
                found.add(text)
    return found


CODED: list[type[StrEnum]] = [
    ReferralStatus,
    RejectReason,
    ServiceCategory,
    Urgency,
    LegalBasis,
    ReferralFlag,
    Recipient,
    AssignReason,
    CloseReason,
    UnmatchedReason,
    Escalation,
    PassOverReason,
]


def _coded() -> set[str]:
    keys = {f"code:{member.value}" for enum in CODED for member in enum}
    keys |= {f"action:{status.value}" for status in PartnerStatus}
    keys |= {f"report:{name}" for name in REPORTS}
    keys |= {f"column:key:{name}" for name in REPORTS}
    columns = [f"{s}/{u}" for s in SERVICES for u in URGENCIES]
    columns += [*OUTCOMES, "fallback_rate", "escalation_rate"]
    columns += ["referrals", "median_hours", "p90_hours", "decisions"]
    keys |= {f"column:{c}" for c in columns}
    return keys


def test_the_templates_say_something() -> None:
    assert len(_literals()) > 100


@pytest.mark.parametrize("locale", ["es"])
def test_every_message_is_in_spanish(locale: str) -> None:
    messages = catalogue(locale)["messages"]
    missing = sorted((_literals() | _coded()) - set(messages))
    assert not missing, f"missing from app/i18n/locales/{locale}/console.json: {missing}"


def test_every_code_has_english_words() -> None:
    messages = catalogue("en")["messages"]
    missing = sorted(_coded() - set(messages))
    assert not missing, f"missing from app/i18n/locales/en/console.json: {missing}"
