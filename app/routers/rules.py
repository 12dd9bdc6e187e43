"""The active rule set (`GET /v1/rules`) and a dry run (`POST /v1/rules/evaluate`)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from app.auth import Principal
from app.deps import AdminDep, require_roles
from app.errors import ServiceUnavailable, ValidationFailed, field_error
from app.models import Role
from app.models.base import utcnow
from app.openapi import ok, problem, responses
from app.rules import RuleFileError, RuleProblem, RuleSet, rule_set_from_text
from app.rules.facts import facts_at
from app.schemas import examples
from app.schemas.decision import Decision
from app.schemas.examples import EXAMPLE_SCREENING
from app.schemas.screening import AwareDatetime, ScreeningIn

router = APIRouter(prefix="/v1/rules", tags=["rules"], responses=responses(404))

MAX_RULE_FILE_CHARS = 512_000


async def get_rule_set(request: Request) -> RuleSet:
    """The rule set loaded at startup (``app.state.rule_set``); ``async`` so that FastAPI
    does not run it in its thread pool."""
    rule_set: RuleSet | None = getattr(request.app.state, "rule_set", None)
    if rule_set is None:
        raise ServiceUnavailable("No rule set is loaded.")
    return rule_set


RuleSetDep = Annotated[RuleSet, Depends(get_rule_set)]
RulesReaderDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor, Role.clinic))]


class RuleSetInfo(BaseModel):
    version: str
    sha256: str = Field(description="sha256 of the rule file's bytes, hex.")
    title: str
    rules: int = Field(description="How many rules the set has.")

    @classmethod
    def of(cls, rule_set: RuleSet) -> RuleSetInfo:
        return cls(
            version=rule_set.version,
            sha256=rule_set.sha256,
            title=rule_set.rule_file.title,
            rules=len(rule_set.rules),
        )


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    screening: ScreeningIn
    rules: str | None = Field(
        default=None,
        max_length=MAX_RULE_FILE_CHARS,
        description="A rule file's text to dry-run instead of the active rule set.",
    )
    as_of: AwareDatetime | None = Field(
        default=None,
        description="Decide as if at this moment (default: now). Clinical windows run from "
        "the event to the decision: a screening posted late has less time left.",
    )


class EvaluateOut(BaseModel):
    rule_set: RuleSetInfo
    decision: Decision


@router.get(
    "",
    response_model=RuleSetInfo,
    summary="The active rule set",
    description="For clinics, auditors and admins: the version and sha256 of the rule set "
    "every decision is now made with. Each decision's trace names the same version and hash, "
    "so an auditor can match a decision to the exact rule file (`ruta rules table` renders "
    "it for people).",
    responses={
        **ok(examples.RULE_SET_INFO, "The active rule set"),
        503: problem("No rule set is loaded"),
    },
)
async def active(rule_set: RuleSetDep, principal: RulesReaderDep) -> RuleSetInfo:
    return RuleSetInfo.of(rule_set)


@router.post(
    "/evaluate",
    response_model=EvaluateOut,
    summary="Dry-run a screening",
    description=(
        "For admins writing or reviewing rules. Evaluates a screening against the active rule "
        "set, or against the rule file text in `rules`, and returns the decision with its "
        "trace (every rule that fired and the values it read). Nothing is stored, forwarded "
        "or matched to partners. A rule file that does not validate answers 422 with one "
        "entry per problem under `errors` (path `rules.<rule id>.<field>`, with the line)."
    ),
    responses={
        **ok(examples.EVALUATE_OUT, "The decision the rule set makes"),
        422: problem("Invalid screening or rule file"),
        503: problem("No rule set is loaded"),
    },
)
async def evaluate(
    body: Annotated[
        EvaluateIn,
        Body(openapi_examples={"example": {"value": {"screening": EXAMPLE_SCREENING}}}),
    ],
    active_set: RuleSetDep,
    principal: AdminDep,
) -> EvaluateOut:
    rule_set = active_set
    if body.rules is not None:
        try:
            rule_set = rule_set_from_text(body.rules, source_name="<submitted>")
        except RuleFileError as exc:
            raise ValidationFailed(
                [
                    field_error(
                        _location(p),
                        p.message + (f" (line {p.line})" if p.line else ""),
                        "rule_file_invalid",
                    )
                    for p in exc.problems
                ],
                detail="The rule file is not valid; see `errors`.",
            ) from None
    facts = facts_at(body.screening, body.as_of or utcnow())
    decision = rule_set.decide(facts, trace=True)
    return EvaluateOut(rule_set=RuleSetInfo.of(rule_set), decision=decision)


def _location(problem: RuleProblem) -> tuple[str | int, ...]:
    """``rules``, the rule id and the path inside the rule as field-path parts: the
    checker's ``when.any[0].field`` is ``when``, ``any``, ``0``, ``field``."""
    parts = re.findall(r"[^.\[\]]+", problem.path or "")
    return (
        "rules",
        *([problem.rule_id] if problem.rule_id else []),
        *(int(part) if part.isdigit() else part for part in parts),
    )
