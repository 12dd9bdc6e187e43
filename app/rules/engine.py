"""A loaded, compiled rule set, and the decision it makes for a screening.

``RuleSet.decide`` is pure: no I/O, no clock, no randomness (the moment of the decision comes
in with the facts, see ``facts.py``). It runs the compiled match function, aggregates the
fired rules per (service, recipient) (highest urgency wins, every reason kept, strongest
legal basis) and then applies the consent policy (``consent.py``).

For a presumed minor, every protection referral addressed to an ordinary provider is
addressed to the child-protection authority instead (docs/protocol.md, rule 1): the
authority is where a child's protection referral goes, and a shelter only ever receives an
additional one (a rule with ``recipient: shelter``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.rules.codegen import InputsFunction, MatchFunction, compile_rule_file
from app.rules.consent import ConsentOutcome, ConsentStep, Key, PlainReferral
from app.rules.errors import RuleFileError, RuleProblem
from app.rules.facts import Facts
from app.rules.loader import parse_rule_file
from app.rules.syntax import Rule, RuleFile
from app.schemas.decision import (
    DecidedReferral,
    Decision,
    FiredRule,
    LegalBasis,
    Reason,
    Recipient,
    ReferralFlag,
    Trace,
    Urgency,
)
from app.schemas.screening import ScreeningIn, ServiceCategory

DEFAULT_RULES_PATH = Path(__file__).parent / "default" / "protocol.yaml"

PROTECTION = ServiceCategory.protection
SERVICE_ORDER = (
    ServiceCategory.protection,
    ServiceCategory.medical,
    ServiceCategory.psychological,
    ServiceCategory.legal,
)
URGENCY_BY_RANK = (Urgency.routine, Urgency.urgent, Urgency.emergency)
BASIS_BY_RANK = (LegalBasis.consent, LegalBasis.vital_interest, LegalBasis.child_protection_duty)
#: per referral key (see :func:`key_label`): (urgency, legal basis, identifying, flags); and
#: non_identifying_notification
Summary = tuple[dict[str, tuple[Urgency, LegalBasis, bool, frozenset[ReferralFlag]]], bool]


def key_label(service: ServiceCategory, recipient: Recipient) -> str:
    """A referral key as text: the service, with the recipient unless an ordinary provider
    (``protection``, ``protection/child_protection_authority``)."""
    if recipient is Recipient.provider:
        return service.value
    return f"{service.value}/{recipient.value}"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """What evaluation needs of a rule, precomputed once."""

    rule: Rule
    index: int
    service: ServiceCategory | None
    recipient: Recipient
    urgency_rank: int
    basis_rank: int
    flags: frozenset[ReferralFlag]
    reason: Reason | None
    inputs: InputsFunction  # generated: the values the rule read

    def fired(self, screening: Any) -> FiredRule:
        return FiredRule(
            rule_id=self.rule.id,
            guideline=self.rule.guideline,
            service=self.service,
            text=self.rule.reason,
            inputs=self.inputs(screening),
        )


class RuleSet:
    """A validated, compiled rule file: build it with ``load_rule_set``."""

    def __init__(self, rule_file: RuleFile, *, sha256: str, source_name: str) -> None:
        self.rule_file = rule_file
        self.version = rule_file.version
        self.sha256 = sha256
        self.source_name = source_name
        compiled = compile_rule_file(rule_file, source_name)
        self.match: MatchFunction = compiled.match
        self.python_source = compiled.source
        self._inputs = compiled.inputs
        self.rules = tuple(self._compile(i, r) for i, r in enumerate(rule_file.rules))
        self.by_id = {c.rule.id: c for c in self.rules}
        self.consent_step = ConsentStep(rule_file.consent_policy)
        self._summaries: dict[tuple[Any, ...], Summary] = {}

    def _compile(self, index: int, rule: Rule) -> CompiledRule:
        reason = None
        if rule.service is not None:
            assert rule.urgency is not None
            assert rule.legal_basis is not None
            reason = Reason(
                rule_id=rule.id,
                guideline=rule.guideline,
                text=rule.reason,
                urgency=rule.urgency,
                legal_basis=rule.legal_basis,
            )
        return CompiledRule(
            rule=rule,
            index=index,
            service=rule.service,
            recipient=rule.recipient,
            urgency_rank=rule.urgency.rank if rule.urgency else 0,
            basis_rank=rule.legal_basis.rank if rule.legal_basis else 0,
            flags=rule.flags,
            reason=reason,
            inputs=self._inputs[index],
        )

    def fired_ids(self, screening: ScreeningIn) -> list[str]:
        fired, _child, _lacks = self.match(screening)
        return [self.rules[i].rule.id for i in fired]

    def _decide(
        self, screening: Any, trace: bool
    ) -> tuple[list[int], list[PlainReferral], ConsentOutcome]:
        fired, child, lacks_capacity = self.match(screening)
        referrals, outcome = self._aggregate(fired, child, lacks_capacity, screening.consent, trace)
        return fired, referrals, outcome

    def _aggregate(
        self, fired: list[int], child: bool, lacks_capacity: bool, consent: Any, trace: bool
    ) -> tuple[list[PlainReferral], ConsentOutcome]:
        rules = self.rules
        # (service, recipient) -> [urgency rank, basis rank, reasons, flags]
        by_key: dict[Key, list[Any]] = {}
        every_referral: frozenset[ReferralFlag] = frozenset()
        for i in fired:
            rule = rules[i]
            service = rule.service
            if service is None:
                every_referral = every_referral | rule.flags
                continue
            recipient = rule.recipient
            if child and service is PROTECTION and recipient is Recipient.provider:
                recipient = Recipient.child_protection_authority
            agg = by_key.get((service, recipient))
            if agg is None:
                by_key[service, recipient] = [
                    rule.urgency_rank,
                    rule.basis_rank,
                    [rule.reason],
                    rule.flags,
                ]
                continue
            if rule.urgency_rank > agg[0]:
                agg[0] = rule.urgency_rank
            if rule.basis_rank > agg[1]:
                agg[1] = rule.basis_rank
            agg[2].append(rule.reason)
            agg[3] = agg[3] | rule.flags
        return self.consent_step.apply(
            consent, by_key, every_referral, child, lacks_capacity, trace
        )

    def evaluate(self, screening: ScreeningIn | Any, *, trace: bool = True) -> Decision:
        """The decision for one screening read as collected (no time has passed since).
        Pure; ``trace=False`` is the fast path.

        ``screening`` is a ``ScreeningIn``, or anything with the same attributes (such as the
        checked view ``rules diff`` uses, see corpus.py).
        """
        return self.decide(Facts(screening), trace=trace)

    def decide(self, facts: Facts, *, trace: bool = True) -> Decision:
        """The decision on ``facts`` (a screening as it stands at the decision's moment,
        see :func:`app.rules.facts.facts_at`). Pure."""
        screening = facts.screening
        fired, plain_referrals, outcome = self._decide(screening, trace)
        construct = DecidedReferral
        referrals = tuple(
            construct(
                service=service,
                recipient=recipient,
                urgency=URGENCY_BY_RANK[urgency_rank],
                legal_basis=basis,
                identifying=identifying,
                flags=flags,
                reasons=tuple(reasons),
            )
            for service, recipient, urgency_rank, basis, identifying, flags, reasons in (
                plain_referrals
            )
        )
        if not trace:
            return Decision(
                referrals=referrals,
                non_identifying_notification=outcome.non_identifying_notification,
                trace=None,
            )
        rules = self.rules
        fired_rules = [rules[i].fired(screening) for i in fired]
        fired_rules.extend(outcome.overrides(screening))
        return Decision(
            referrals=referrals,
            non_identifying_notification=outcome.non_identifying_notification,
            trace=Trace(
                rule_set_version=self.version,
                rule_set_hash=self.sha256,
                fired=tuple(fired_rules),
                suppressed=tuple(outcome.suppressed),
                facts_as_of=facts.at,
                adjustments=facts.adjustments,
            ),
        )

    def summary(self, screening: Any) -> Summary:
        """What ``rules diff`` compares: per service (urgency, basis, identifying, flags),
        and the non-identifying notification. Same logic as ``evaluate``, no pydantic objects.
        """
        fired, child, lacks_capacity = self.match(screening)
        consent = screening.consent
        # The result depends only on what fired and on consent, so repeats are looked up.
        key = (
            tuple(fired),
            child,
            lacks_capacity,
            consent.given,
            consent.scopes,
            consent.share_identifying,
        )
        cached = self._summaries.get(key)
        if cached is not None:
            return cached
        plain_referrals, outcome = self._aggregate(fired, child, lacks_capacity, consent, False)
        result: Summary = (
            {
                key_label(service, recipient): (URGENCY_BY_RANK[u], basis, identifying, flags)
                for service, recipient, u, basis, identifying, flags, _reasons in plain_referrals
            },
            outcome.non_identifying_notification,
        )
        if len(self._summaries) >= 100_000:
            self._summaries.clear()
        self._summaries[key] = result
        return result


def rule_set_from_text(text: str, *, source_name: str = "<text>") -> RuleSet:
    """Validate and compile rule-file text. Raises ``RuleFileError``."""
    rule_file = parse_rule_file(text, source_name)
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return RuleSet(rule_file, sha256=sha256, source_name=source_name)


def load_rule_set(path: str | Path = DEFAULT_RULES_PATH) -> RuleSet:
    """Load, validate and compile a rule file. Raises ``RuleFileError``; never half-valid."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleFileError([RuleProblem(str(path), f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RuleFileError([RuleProblem(str(path), "is not UTF-8 text")]) from None
    rule_file = parse_rule_file(text, str(path))
    return RuleSet(rule_file, sha256=hashlib.sha256(raw).hexdigest(), source_name=str(path))
