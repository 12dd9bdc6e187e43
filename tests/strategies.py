"""Hypothesis strategies shared by tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any

from hypothesis import strategies as st

from app.partners.directory import Partner, Weekday
from app.schemas.decision import PartnerRole
from app.schemas.screening import (
    AgeBand,
    ConsentScope,
    ControlMethod,
    ExploitationType,
    InjurySeverity,
    Language,
    MigrationStatus,
    Need,
    Recruitment,
    Region,
    ScreeningIn,
    Sector,
    ServiceCategory,
    Sex,
    Suicidality,
)


def json_values(keys: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value: nulls, booleans, 64-bit integers, finite floats, any text, and lists
    and objects of them (with ``keys`` as object keys; text by default)."""
    key_strategy = st.text(max_size=8) if keys is None else keys
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(key_strategy, children, max_size=4)
        ),
        max_leaves=20,
    )


# --- Screenings and partner directories, drawn from the schemas' own value lists ----------
#
# The protocol's properties (docs/protocol.md) are checked over these, not only over
# hand-picked cases: every field a rule reads takes every value its schema allows, and the
# combinations the protocol is most careful about (children, refusals, danger, the police)
# come up often.

SCREENED_AT = datetime(2026, 11, 20, 14, 40, tzinfo=UTC)


def _values(enum: type[Enum]) -> st.SearchStrategy[str]:
    return st.sampled_from([m.value for m in enum])


def _some(enum: type[Enum], max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(_values(enum), max_size=max_size, unique=True)


def _consent() -> st.SearchStrategy[dict[str, Any]]:
    def build(given: bool) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                "given": st.just(given),
                "scopes": _some(ConsentScope, 5) if given else st.just([]),
                "share_identifying": st.booleans() if given else st.just(False),
                "method": st.just("verbal" if given else "not_obtained"),
                "lacks_capacity": st.sampled_from([False, False, False, True]),
            }
        )

    return st.booleans().flatmap(build)


def screening_documents(
    screened_at: datetime = SCREENED_AT,
) -> st.SearchStrategy[dict[str, Any]]:
    """A screening as a clinic would post it (JSON-mode values)."""
    flag = st.booleans()
    rare = st.sampled_from([False, False, False, True])
    subject = st.fixed_dictionaries(
        {
            "case_code": st.just("HYP-0001"),
            "age": st.none() | st.integers(0, 120),
            "age_band": st.none() | _values(AgeBand),
            "age_estimated": flag,
            "age_disputed": rare,
            "minority_signs": rare,
            "sex": _values(Sex),
            "nationality": st.none() | st.sampled_from(["PE", "VE", "BO", "CO"]),
            "preferred_language": _values(Language),
            "speaks_spanish": st.sampled_from([True, True, False]),
            "needs_interpreter": rare,
            "region": _values(Region),
            "unaccompanied_minor": rare,
            "separated_child": rare,
            "caregiver_present": rare,
            "caregiver_suspected": rare,
        },
        optional={
            "date_of_birth": st.dates(date(1907, 1, 1), screened_at.date()).map(str),
        },
    )
    return st.fixed_dictionaries(
        {
            "id": st.uuids(version=4).map(str),
            "source": st.just(
                {
                    "screener": "hyp-001",
                    "tool": {"name": "tvit", "version": "2.1"},
                    "interview_language": "es",
                    "screened_at": screened_at.isoformat(),
                }
            ),
            "subject": subject,
            "consent": _consent(),
            "safety": st.fixed_dictionaries(
                {
                    "immediate_danger": rare,
                    "trafficker_nearby": rare,
                    "can_return_safely": st.sampled_from([None, True, False]),
                    "threats": rare,
                    "phone_controlled": rare,
                }
            ),
            "indicators": st.fixed_dictionaries(
                {
                    "exploitation_types": _some(ExploitationType),
                    "control_methods": _some(ControlMethod),
                    "recruitment": _some(Recruitment),
                    "sectors": _some(Sector),
                }
            ),
            "health": st.fixed_dictionaries(
                {
                    "injury_severity": _values(InjurySeverity),
                    "hours_since_sexual_violence": st.none()
                    | st.floats(0, 400, allow_nan=False).map(lambda h: round(h, 1)),
                    "pregnant": st.sampled_from([None, True, False]),
                    "sti_symptoms": rare,
                    "febrile_illness": rare,
                    "mining_exposure": rare,
                    "medical_care_withheld": rare,
                }
            ),
            "mental_health": st.fixed_dictionaries(
                {
                    "suicidal": _values(Suicidality),
                    "acute_distress": rare,
                    "psychosis_signs": rare,
                    "positive_screen": rare,
                }
            ),
            "legal": st.fixed_dictionaries(
                {
                    "has_documents": st.sampled_from([None, True, False]),
                    "documents_withheld": rare,
                    "migration_status": _values(MigrationStatus),
                    "wants_police_report": st.booleans(),
                    "unpaid_wages": rare,
                }
            ),
            "needs_expressed": _some(Need),
        }
    )


def screenings(screened_at: datetime = SCREENED_AT) -> st.SearchStrategy[ScreeningIn]:
    return screening_documents(screened_at).map(ScreeningIn.model_validate)


_ZONES = ("America/Lima", "America/Bogota", "America/La_Paz", "UTC")


def _hours() -> st.SearchStrategy[dict[str, Any]]:
    slot = st.tuples(st.integers(0, 22), st.integers(1, 12)).map(
        lambda t: {"opens": f"{t[0]:02d}:00", "closes": f"{min(t[0] + t[1], 23):02d}:59"}
    )
    schedule = st.fixed_dictionaries(
        {
            "always_open": st.just(False),
            "timezone": st.sampled_from(_ZONES),
            "schedule": st.lists(
                st.tuples(_some(Weekday, 7).filter(bool), slot).map(
                    lambda t: {"days": t[0], **t[1]}
                ),
                min_size=1,
                max_size=2,
            ),
        }
    )
    return st.one_of(st.just({"always_open": True}), schedule)


def _partner(index: int, role: str) -> st.SearchStrategy[dict[str, Any]]:
    services = (
        st.just([])
        if role == PartnerRole.notification_recipient.value
        else _some(ServiceCategory, 4).filter(bool)
    )
    age_range = st.tuples(st.none() | st.integers(0, 30), st.none() | st.integers(10, 120)).filter(
        lambda r: r[0] is None or r[1] is None or r[0] <= r[1]
    )
    return st.fixed_dictionaries(
        {
            "id": st.just(f"p{index}"),
            "organisation": st.just({"id": f"org{index}", "name": f"Org {index}"}),
            "name": st.just(f"Partner {index}"),
            "role": st.just(role),
            "services": services,
            "service_area": st.one_of(
                st.just({"national": True}),
                st.lists(_values(Region), min_size=1, max_size=4).map(lambda r: {"regions": r}),
            ),
            "eligibility": st.tuples(age_range, _some(Sex, 2)).map(
                lambda t: {"min_age": t[0][0], "max_age": t[0][1], "sexes": t[1]}
            ),
            "languages": _some(Language, 3).filter(bool),
            "capacity": st.integers(0, 3).map(lambda n: {"available": n, "maximum": 3}),
            "hours": _hours(),
            "endpoint": st.just({"url": f"https://p{index}.example.org/ruta"}),
            "status": st.sampled_from(["active", "active", "active", "paused"]),
            "priority": st.integers(0, 100),
        }
    )


def directories(max_size: int = 10) -> st.SearchStrategy[list[Partner]]:
    """A partner directory: any roles (law enforcement and the child-protection authority
    often), any services, areas, eligibility, capacity, hours and time zones."""
    roles = st.lists(_values(PartnerRole), min_size=1, max_size=max_size)
    return roles.flatmap(lambda rs: st.tuples(*(_partner(i, r) for i, r in enumerate(rs)))).map(
        lambda docs: [Partner.model_validate(d) for d in docs]
    )


def moments(start: datetime = SCREENED_AT) -> st.SearchStrategy[datetime]:
    """A moment within two weeks after ``start``, to the minute (any hour, any weekday)."""
    return st.integers(0, 14 * 24 * 60).map(lambda m: start + timedelta(minutes=m))
