from __future__ import annotations

import itertools

import pytest

from app.referrals.state import (
    PARTNER_TRANSITIONS,
    TERMINAL,
    PartnerStatus,
    ReferralStatus,
    is_terminal,
    partner_may_report,
)


def test_terminal_states_accept_no_partner_report() -> None:
    for status, report in itertools.product(TERMINAL, PartnerStatus):
        assert not partner_may_report(status, report), (status, report)


def test_every_non_terminal_partner_state_can_reach_a_terminal_state() -> None:
    mapping = {s: ReferralStatus(s.value) for s in PartnerStatus}
    for start in PARTNER_TRANSITIONS:
        seen, frontier = {start}, [start]
        while frontier:
            current = frontier.pop()
            for report in PARTNER_TRANSITIONS.get(current, ()):
                nxt = mapping[report]
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        # rejected is handled by fallback; everything else must be able to finish.
        assert seen & (TERMINAL | {ReferralStatus.rejected}), start


@pytest.mark.parametrize(
    ("current", "report", "allowed"),
    [
        (ReferralStatus.delivered, PartnerStatus.received, True),
        (ReferralStatus.delivered, PartnerStatus.completed, False),
        (ReferralStatus.received, PartnerStatus.rejected, True),
        (ReferralStatus.accepted, PartnerStatus.rejected, False),
        (ReferralStatus.accepted, PartnerStatus.completed, True),
        (ReferralStatus.on_hold, PartnerStatus.in_progress, True),
        (ReferralStatus.completed, PartnerStatus.in_progress, False),
        (ReferralStatus.held, PartnerStatus.accepted, False),
        (ReferralStatus.queued, PartnerStatus.received, True),
    ],
)
def test_transitions(current: ReferralStatus, report: PartnerStatus, allowed: bool) -> None:
    assert partner_may_report(current, report) is allowed


def test_terminality() -> None:
    assert is_terminal(ReferralStatus.completed)
    assert not is_terminal(ReferralStatus.rejected)
    assert not is_terminal(ReferralStatus.held)
