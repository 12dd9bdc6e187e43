"""Rules engine speed: the compiled default protocol against a hand-written if-chain.

Both sides evaluate the same generated screenings (validated ``ScreeningIn`` models) and
build the same ``Decision`` objects, so the ratio measures the engine, not the output.
``tests/rules/test_bench_baseline.py`` checks that both agree on thousands of screenings,
which keeps the baseline honest.

    python -m bench.rules [--count 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from app.rules import DEFAULT_RULES_PATH, RuleSet, load_rule_set
from app.rules.corpus import generate_screenings
from app.schemas.decision import (
    DecidedReferral,
    Decision,
    LegalBasis,
    Reason,
    Recipient,
    ReferralFlag,
    Urgency,
)
from app.schemas.screening import (
    AgeBand,
    ConsentScope,
    ControlMethod,
    InjurySeverity,
    Language,
    MigrationStatus,
    Need,
    ScreeningIn,
    Sector,
    ServiceCategory,
    Suicidality,
)

_MINOR_BANDS = frozenset({AgeBand.b0_11, AgeBand.b12_14, AgeBand.b15_17})
_INDIGENOUS = frozenset(
    {Language.qu, Language.ay, Language.cni, Language.ame, Language.agr, Language.shp}
)
_MINING = frozenset({Sector.mining, Sector.logging})
_FOREIGN_STATUS = frozenset(
    {MigrationStatus.regular, MigrationStatus.asylum_seeker, MigrationStatus.refugee}
)
_ORDER = (
    ServiceCategory.protection,
    ServiceCategory.medical,
    ServiceCategory.psychological,
    ServiceCategory.legal,
)
_SCOPE = {s: ConsentScope(s.value) for s in ServiceCategory}
_URGENCY = (Urgency.routine, Urgency.urgent, Urgency.emergency)
_F = ReferralFlag


_R = Recipient
#: Where a decision lists its referrals: service, then recipient.
_KEYS = tuple(
    (service, recipient)
    for service in _ORDER
    for recipient in (_R.child_protection_authority, _R.provider, _R.shelter, _R.law_enforcement)
)
_Key = tuple[ServiceCategory, Recipient]


class HandWritten:
    """The default protocol written by hand, as a developer would without an engine.

    Reasons are taken from the rule set so that both sides return equal objects. It is also
    an independent reading of docs/protocol.md: ``tests/rules/test_bench_baseline.py`` holds
    the engine to it on thousands of generated screenings.
    """

    def __init__(self, rule_set: RuleSet) -> None:
        self.reason: dict[str, Reason] = {
            c.rule.id: c.reason for c in rule_set.rules if c.reason is not None
        }

    def evaluate(self, s: ScreeningIn) -> Decision:
        minor = _presumed_minor(s)
        out: dict[_Key, list[Any]] = {}
        reason = self.reason

        def add(
            service: ServiceCategory,
            urgency: int,
            basis: int,
            rule_id: str,
            flags: frozenset[ReferralFlag] = frozenset(),
            recipient: Recipient = _R.provider,
        ) -> None:
            if minor and service is ServiceCategory.protection and recipient is _R.provider:
                recipient = _R.child_protection_authority
            agg = out.get((service, recipient))
            if agg is None:
                out[service, recipient] = [urgency, basis, [reason[rule_id]], flags]
                return
            agg[0] = max(agg[0], urgency)
            agg[1] = max(agg[1], basis)
            agg[2].append(reason[rule_id])
            agg[3] = agg[3] | flags

        everyone = _protection(s, minor, add)
        _medical(s, minor, add)
        _mental_health(s, add)
        _legal(s, add)
        return _consent(s, minor, out, frozenset(everyone))


_Add = Callable[..., None]
_LIFE = frozenset({_F.life_at_risk})


def _presumed_minor(s: ScreeningIn) -> bool:
    sub = s.subject
    age = sub.age
    return (
        (age is not None and age < 18)
        or (sub.age_band is not None and sub.age_band in _MINOR_BANDS)
        or (
            (age is None or sub.age_disputed)
            and (sub.minority_signs or sub.unaccompanied_minor or sub.separated_child)
        )
    )


def _protection(s: ScreeningIn, minor: bool, add: _Add) -> set[ReferralFlag]:
    sub, saf = s.subject, s.safety
    alone = sub.unaccompanied_minor or sub.separated_child
    danger = (
        saf.immediate_danger
        or saf.trafficker_nearby
        or saf.threats
        or saf.can_return_safely is False
    )
    shelter = Need.shelter in s.needs_expressed
    everyone: set[ReferralFlag] = set()
    p = ServiceCategory.protection
    if minor:
        add(p, 1, 2, "minor-protection", recipient=_R.child_protection_authority)
        if alone:
            add(
                p,
                1,
                2,
                "child-without-guardian",
                frozenset({_F.guardian_needed}),
                recipient=_R.child_protection_authority,
            )
        if alone or shelter:
            add(p, 1, 2, "minor-shelter", recipient=_R.shelter)
        if danger:
            add(p, 2, 2, "minor-shelter-danger", _LIFE, recipient=_R.shelter)
        everyone.add(_F.treat_as_child)
    if danger:
        add(p, 2, 1, "immediate-danger", _LIFE)
    if shelter:
        add(p, 0, 0, "needs-shelter")
    if s.legal.wants_police_report:
        add(
            p,
            0,
            0,
            "police-report",
            frozenset({_F.assistance_not_conditional}),
            recipient=_R.law_enforcement,
        )
    if sub.caregiver_suspected:
        everyone.add(_F.do_not_contact_caregiver)
    if sub.preferred_language in _INDIGENOUS or not sub.speaks_spanish or sub.needs_interpreter:
        everyone.add(_F.interpreter_needed)
    if saf.phone_controlled:
        everyone.add(_F.phone_controlled)
    return everyone


def _medical(s: ScreeningIn, minor: bool, add: _Add) -> None:
    hea, ind = s.health, s.indicators
    m = ServiceCategory.medical
    hours = hea.hours_since_sexual_violence
    no_police = frozenset({_F.no_police_report_required})
    if hours is not None:
        if hours <= 72:
            add(m, 2, 0, "sexual-violence-72h", no_police)
        elif hours <= 120:
            add(m, 1, 0, "sexual-violence-120h", no_police)
        else:
            add(m, 0, 0, "sexual-violence-later", no_police)
        if minor and hours <= 120:
            add(m, 2, 2, "child-recent-sexual-violence", no_police)
        elif minor:
            add(m, 0, 2, "child-sexual-violence-follow-up", no_police)
    severity = hea.injury_severity
    if severity == InjurySeverity.life_threatening:
        add(m, 2, 1, "injury-life-threatening", _LIFE)
    elif severity == InjurySeverity.serious:
        add(m, 1, 0, "injury-serious")
    elif severity == InjurySeverity.minor:
        add(m, 0, 0, "injury-minor")
    if hea.pregnant is True:
        add(m, 1, 0, "pregnancy")
    if hea.sti_symptoms:
        add(m, 1, 0, "sti-symptoms")
    if hea.medical_care_withheld:
        add(m, 0, 0, "medical-care-withheld")
    if not _MINING.isdisjoint(ind.sectors) or hea.mining_exposure:
        add(m, 0, 0, "mining-logging-screening")
        if hea.febrile_illness:
            add(m, 1, 0, "mining-logging-fever")
    if Need.medical_care in s.needs_expressed:
        add(m, 0, 0, "needs-medical-care")


def _mental_health(s: ScreeningIn, add: _Add) -> None:
    men, ind = s.mental_health, s.indicators
    p = ServiceCategory.psychological
    suicidal = men.suicidal
    if suicidal == Suicidality.plan or suicidal == Suicidality.attempt:
        add(p, 2, 1, "suicide-plan-or-attempt", _LIFE)
    if men.psychosis_signs:
        add(p, 2, 1, "psychosis-signs", _LIFE)
    if suicidal == Suicidality.ideation:
        add(p, 1, 0, "suicidal-ideation")
    if men.positive_screen or men.acute_distress:
        add(p, 0, 0, "psychosocial-support")
    if ind.exploitation_types or ind.control_methods:
        add(p, 0, 0, "trafficking-psychosocial-offer")
    if Need.psychological_support in s.needs_expressed:
        add(p, 0, 0, "needs-psychological-support")


def _legal(s: ScreeningIn, add: _Add) -> None:
    sub, ind, leg = s.subject, s.indicators, s.legal
    g = ServiceCategory.legal
    legal_flags = frozenset({_F.assistance_not_conditional})
    control = ind.control_methods
    if leg.documents_withheld or ControlMethod.documents_withheld in control:
        add(g, 0, 0, "documents-withheld", legal_flags)
    if ControlMethod.debt_bondage in control:
        add(g, 0, 0, "debt-bondage", legal_flags)
    if leg.unpaid_wages or ControlMethod.wages_withheld in control:
        add(g, 0, 0, "unpaid-wages", legal_flags)
    if leg.migration_status == MigrationStatus.irregular:
        add(g, 0, 0, "irregular-migration-status", legal_flags)
    if (
        sub.nationality is not None and sub.nationality != "PE"
    ) or leg.migration_status in _FOREIGN_STATUS:
        add(g, 0, 0, "foreign-national", legal_flags)
    if Need.legal_advice in s.needs_expressed or Need.documents in s.needs_expressed:
        add(g, 0, 0, "needs-legal-advice", legal_flags)


def _consent(
    s: ScreeningIn, minor: bool, out: dict[_Key, list[Any]], every: frozenset[ReferralFlag]
) -> Decision:
    """The consent policy, by hand."""
    con = s.consent
    lacks = con.lacks_capacity
    given = con.given and not lacks
    referrals = []
    declined = False
    for key in _KEYS:
        agg = out.get(key)
        if agg is None:
            continue
        service, recipient = key
        urgency, basis_rank, reasons, flags = agg
        if recipient is _R.law_enforcement:
            if minor or not given or ConsentScope.law_enforcement not in con.scopes:
                continue
            basis, identifying = LegalBasis.consent, con.share_identifying
        elif basis_rank == 2:
            basis, identifying = LegalBasis.child_protection_duty, True
        elif basis_rank == 1 or lacks:
            basis, identifying = LegalBasis.vital_interest, True
        elif given and _SCOPE[service] in con.scopes:
            basis, identifying = LegalBasis.consent, con.share_identifying
        else:
            declined = declined or not con.given
            continue
        referrals.append(
            DecidedReferral(
                service=service,
                recipient=recipient,
                urgency=_URGENCY[urgency],
                legal_basis=basis,
                identifying=identifying,
                flags=flags | every,
                reasons=tuple(reasons),
            )
        )
    notify = not minor and not con.given and not lacks and (declined or not referrals)
    return Decision(referrals=tuple(referrals), non_identifying_notification=notify, trace=None)


def _time(fn: Callable[[ScreeningIn], Any], screenings: list[ScreeningIn], repeat: int) -> float:
    """Best-of-``repeat`` seconds per screening."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for s in screenings:
            fn(s)
        runs.append((time.perf_counter() - started) / len(screenings))
    return min(runs)


def run(count: int = 20_000, repeat: int = 5, seed: int = 0) -> dict[str, float]:
    rule_set = load_rule_set(DEFAULT_RULES_PATH)
    baseline = HandWritten(rule_set)
    screenings = generate_screenings(count, seed)

    def engine_off(s: ScreeningIn) -> Decision:
        return rule_set.evaluate(s, trace=False)

    def engine_on(s: ScreeningIn) -> Decision:
        return rule_set.evaluate(s, trace=True)

    # Interleave the measurements so a noisy neighbour hurts both sides alike.
    hand, off, on = [], [], []
    for _ in range(repeat):
        hand.append(_time(baseline.evaluate, screenings, 1))
        off.append(_time(engine_off, screenings, 1))
        on.append(_time(engine_on, screenings, 1))
    h, o, t = min(hand), min(off), min(on)
    return {
        "screenings": count,
        "hand_written_us": h * 1e6,
        "engine_trace_off_us": o * 1e6,
        "engine_trace_on_us": t * 1e6,
        "ratio_trace_off": o / h,
        "ratio_trace_on": t / h,
        "median_ratio_trace_off": statistics.median(a / b for a, b in zip(off, hand, strict=True)),
        "median_ratio_trace_on": statistics.median(a / b for a, b in zip(on, hand, strict=True)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--diff", type=int, default=100_000, help="Screenings for the rules-diff timing (0: skip)."
    )
    args = parser.parse_args()
    result = run(args.count, args.repeat, args.seed)
    print(f"screenings: {result['screenings']}")
    print(f"hand-written if-chain : {result['hand_written_us']:8.2f} µs/screening")
    print(f"engine, trace off     : {result['engine_trace_off_us']:8.2f} µs/screening")
    print(f"engine, trace on      : {result['engine_trace_on_us']:8.2f} µs/screening")
    print(
        f"ratio trace off: {result['ratio_trace_off']:.2f}x (target <= 2x), "
        f"trace on: {result['ratio_trace_on']:.2f}x (target <= 4x)"
    )
    if args.diff:
        seconds = time_diff(args.diff)
        print(f"rules diff over generated:{args.diff}: {seconds:.2f} s (target < 10 s)")
    return 0


def time_diff(count: int) -> float:
    """Wall time of ``rules diff`` (generation included) between the protocol and a variant."""
    import tempfile
    from pathlib import Path

    from app.rules.diff import diff_rule_sets

    text = DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "new.yaml"
        new.write_text(text.replace("value: 72, if_missing", "value: 48, if_missing"))
        started = time.perf_counter()
        diff_rule_sets(DEFAULT_RULES_PATH, new, f"generated:{count}")
        return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
