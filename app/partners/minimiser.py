"""The payload minimiser: the only code that builds what leaves Ruta for a partner.

The need-to-know policy is data (``policy.yaml``): per service category, the data
categories that may leave, and per data category, the screening fields it holds. The
minimiser copies only those fields, so a field nobody listed is dropped (default deny).

Both delivery (the webhook body) and the thin-mode details endpoint call
:func:`build_referral_body`; nothing else assembles an outbound body. A partner whose
endpoint format is ``fhir-r4`` gets the same minimised body re-encoded as a FHIR R4 Bundle
(:mod:`app.partners.fhir`), built here from the ``ruta-json`` body and nothing else, so the
need-to-know property holds for both formats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import orjson
import yaml
from pydantic import BaseModel

from app.partners import fhir
from app.partners.directory import Organisation, PayloadFormat
from app.schemas.decision import DecidedReferral, Recipient, ReferralFlag
from app.schemas.screening import AGE_BAND_RANGES, ScreeningIn, ServiceCategory

POLICY_PATH = Path(__file__).parent / "policy.yaml"
PAYLOAD_FORMAT = "ruta-json/1"

#: Contact-instruction fields the payload may carry (``number_or_handle`` only with basis).
CONTACT_INSTRUCTION_KEYS = frozenset(
    {
        "channel",
        "number_or_handle",
        "safe_times",
        "code_word",
        "phone_controlled",
        "do_not_contact_caregiver",
        "contact_through_referrer",
        "instructions",
    }
)
REFERRAL_KEYS = frozenset(
    {
        "id",
        "partner_id",
        "service",
        "urgency",
        "legal_basis",
        "identifying",
        "respond_by",
        "flags",
        "reasons",
        "referring_organisation",
        "status_url",
        "details_url",
    }
)


class PolicyError(ValueError):
    pass


def screening_leaf_paths(model: type[BaseModel] = ScreeningIn, prefix: str = "") -> set[str]:
    """Every leaf field path of the screening schema, e.g. ``subject.contact.phone``."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        if nested is not None:
            paths |= screening_leaf_paths(nested, f"{path}.")
        else:
            paths.add(path)
    return paths


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


#: A projection: for each key, the projection below it (None for a leaf) and the leaf's
#: dotted path.
Projection = dict[str, tuple["Projection | None", str]]

#: Contact instructions carry these (never the ``screening`` part of a body).
_SAFE_CONTACT = "safety.safe_contact."
#: Left out of a body when someone else controls the person's phone.
_PHONE = "subject.contact.phone"


def _projection(paths: Iterable[str]) -> Projection:
    """The allowed leaf paths as a tree, in sorted path order."""
    tree: Projection = {}
    for path in sorted(paths):
        *parents, leaf = path.split(".")
        node = tree
        for key in parents:
            below, _ = node.setdefault(key, ({}, ""))
            assert below is not None, f"{path} is below a leaf"
            node = below
        node[leaf] = (None, path)
    return tree


@dataclass(frozen=True, slots=True)
class Allowed:
    """What one (service, identifying) pair may receive, worked out once per policy."""

    categories: tuple[str, ...]
    path_set: frozenset[str]
    #: The paths copied into a body's ``screening`` (not the safe contact, which travels in
    #: the contact instructions), with and without the person's phone number.
    projection: Projection
    projection_without_phone: Projection


@dataclass(frozen=True, slots=True)
class Policy:
    categories: dict[str, tuple[str, ...]]
    identifying_categories: frozenset[str]
    services: dict[ServiceCategory, frozenset[str]]
    #: Paths a kind of recipient never receives, whatever the service.
    withheld: dict[Recipient, frozenset[str]] = dataclasses.field(default_factory=dict)
    #: Filled on first use: the policy itself never changes once parsed.
    _allowed: dict[tuple[ServiceCategory, bool, Recipient], Allowed] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _category_by_path: dict[str, str] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def allowed(
        self,
        service: ServiceCategory,
        identifying: bool,
        recipient: Recipient = Recipient.provider,
    ) -> Allowed:
        """What a (service, identifying, recipient) referral may receive, worked out once."""
        key = (service, identifying, recipient)
        found = self._allowed.get(key)
        if found is None:
            allowed = self.services[service]
            categories = tuple(
                c
                for c in self.categories
                if c in allowed and (identifying or c not in self.identifying_categories)
            )
            withheld = self.withheld.get(recipient, frozenset())
            paths = frozenset(
                p for c in categories for p in self.categories[c] if p not in withheld
            )
            copied = [p for p in paths if not p.startswith(_SAFE_CONTACT)]
            found = Allowed(
                categories=categories,
                path_set=paths,
                projection=_projection(copied),
                projection_without_phone=_projection(p for p in copied if p != _PHONE),
            )
            self._allowed[key] = found
        return found

    def allowed_categories(self, service: ServiceCategory, identifying: bool) -> list[str]:
        return list(self.allowed(service, identifying).categories)

    def allowed_paths(self, service: ServiceCategory, identifying: bool) -> frozenset[str]:
        return self.allowed(service, identifying).path_set

    def category_of(self, path: str) -> str:
        if not self._category_by_path:
            self._category_by_path.update(
                {p: category for category, paths in self.categories.items() for p in paths}
            )
        return self._category_by_path[path]


def parse_policy(document: Any) -> Policy:
    """Validate a policy document against the screening schema; see policy.yaml."""
    if not isinstance(document, dict) or document.get("version") != 1:
        raise PolicyError("the policy needs `version: 1`")
    raw_categories = document.get("data_categories") or {}
    categories = {str(k): tuple(str(p) for p in v) for k, v in raw_categories.items()}
    never = {str(p) for p in document.get("never") or ()}
    leaves = screening_leaf_paths()
    seen: dict[str, str] = {}
    for category, paths in categories.items():
        for path in paths:
            if path not in leaves:
                raise PolicyError(f"data_categories.{category}: {path} is not a screening field")
            if path in seen or path in never:
                raise PolicyError(f"{path} is classified twice")
            seen[path] = category
    unknown_never = never - leaves
    if unknown_never:
        raise PolicyError(f"never: not screening fields: {', '.join(sorted(unknown_never))}")
    unclassified = leaves - set(seen) - never
    if unclassified:
        raise PolicyError(f"unclassified screening fields: {', '.join(sorted(unclassified))}")
    identifying = frozenset(str(c) for c in document.get("identifying_categories") or ())
    if not identifying <= set(categories):
        raise PolicyError("identifying_categories names an unknown category")
    for path in ("subject.name", "subject.date_of_birth", "safety.safe_contact.number_or_handle"):
        if seen.get(path) not in identifying:
            raise PolicyError(f"{path} must be in an identifying category")
    if any(seen.get(p) not in identifying for p in leaves if p.startswith("subject.contact.")):
        raise PolicyError("subject.contact.* must be in an identifying category")
    if "notes" not in never:
        raise PolicyError("notes must be listed under never")
    services: dict[ServiceCategory, frozenset[str]] = {}
    for service in ServiceCategory:
        listed = (document.get("services") or {}).get(service.value)
        if listed is None:
            raise PolicyError(f"services.{service.value} is missing")
        names = frozenset(str(c) for c in listed)
        if not names <= set(categories):
            raise PolicyError(f"services.{service.value} names an unknown category")
        services[service] = names
    for service_name, banned in (document.get("forbidden") or {}).items():
        clash = services[ServiceCategory(service_name)] & set(banned)
        if clash:
            raise PolicyError(f"services.{service_name} may never receive {sorted(clash)}")
    # The protocol's own invariants, whatever the file says (docs/protocol.md, 10 and 15).
    if services[ServiceCategory.legal] & {"clinical", "mental_health"}:
        raise PolicyError("legal aid never receives clinical details")
    withheld = _withheld(document.get("recipients") or {}, leaves)
    if "legal.migration_status" not in withheld.get(Recipient.law_enforcement, frozenset()):
        raise PolicyError("law enforcement never receives legal.migration_status")
    return Policy(
        categories=categories,
        identifying_categories=identifying,
        services=services,
        withheld=withheld,
    )


def _withheld(raw: Any, leaves: set[str]) -> dict[Recipient, frozenset[str]]:
    if not isinstance(raw, dict):
        raise PolicyError("recipients maps a recipient to what it never receives")
    withheld: dict[Recipient, frozenset[str]] = {}
    for name, entry in raw.items():
        try:
            recipient = Recipient(name)
        except ValueError:
            raise PolicyError(f"recipients.{name} is not a recipient") from None
        paths = frozenset(str(p) for p in (entry or {}).get("withheld") or ())
        if not paths <= leaves:
            raise PolicyError(f"recipients.{name}.withheld names unknown fields")
        withheld[recipient] = paths
    return withheld


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    return parse_policy(yaml.safe_load(POLICY_PATH.read_text(encoding="utf-8")))


def body_fields(policy: Policy | None = None) -> list[tuple[str, str | None]]:
    """Every field path a ``ruta-json`` referral body can hold, with the data category of
    each screening field: the ``field`` code system that fhir-r4 ``Task.input`` types cite."""
    policy = policy or default_policy()
    paths: list[tuple[str, str | None]] = [
        (f"referral.{key}", None) for key in sorted(REFERRAL_KEYS | {"consent_withdrawn"})
    ]
    paths += [(f"contact_instructions.{key}", None) for key in sorted(CONTACT_INSTRUCTION_KEYS)]
    paths += sorted(
        (f"screening.{path}", category)
        for category, category_paths in policy.categories.items()
        for path in category_paths
        if not path.startswith(_SAFE_CONTACT)
    )
    return [*paths, ("data_categories", None)]


@dataclass(frozen=True, slots=True)
class OutboundReferral:
    """A minimised body and what it shares, for the outbox row and the audit event."""

    body: dict[str, Any]
    #: Data categories present in the body (only those with a value), sorted.
    data_categories: tuple[str, ...]
    #: Dotted screening paths present in the body, sorted (no values).
    fields: tuple[str, ...]
    thin: bool
    payload_format: PayloadFormat = PayloadFormat.ruta_json
    #: The FHIR R4 Bundle rendered from ``body`` (``fhir-r4`` partners only).
    fhir_bundle: dict[str, Any] | None = None

    @property
    def document(self) -> dict[str, Any]:
        """What the partner receives: ``body`` itself, or its FHIR rendering."""
        return self.fhir_bundle if self.fhir_bundle is not None else self.body

    def to_bytes(self) -> bytes:
        """Canonical bytes: store them once; every retry sends exactly these bytes."""
        if self.fhir_bundle is not None:
            return fhir.dumps(self.fhir_bundle)
        return _sorted_json(self.body)


_INSTRUCTIONS = {
    "phone_controlled": {
        "es": "Otra persona controla el teléfono de la persona: no llame ni escriba a ese "
        "teléfono; use solo el canal seguro.",
        "en": "Someone else controls the person's phone: do not call or message it; use only "
        "the safe channel.",
    },
    "do_not_contact_caregiver": {
        "es": "No contacte a padres, tutores ni cuidadores: se sospecha su participación.",
        "en": "Do not contact parents, guardians or caregivers: they are suspected of involvement.",
    },
    "code_word": {
        "es": "Use la palabra clave para identificarse antes de hablar del caso.",
        "en": "Use the code word to identify yourself before discussing the case.",
    },
    "through_referrer": {
        "es": "Contacte a la persona solo a través de la organización que deriva.",
        "en": "Contact the person only through the referring organisation.",
    },
}


def _project(document: dict[str, Any], projection: Projection, fields: list[str]) -> dict[str, Any]:
    """The allowed part of ``document``: leaves without a value (None, an empty list) and
    branches left empty are dropped; each leaf copied is added to ``fields``."""
    shared: dict[str, Any] = {}
    for key, (below, path) in projection.items():
        value = document.get(key)
        if below is not None:
            if isinstance(value, dict):
                inner = _project(value, below, fields)
                if inner:
                    shared[key] = inner
        elif value is not None and value != []:
            shared[key] = value
            fields.append(path)
    return shared


def build_referral_body(
    *,
    referral_id: UUID,
    partner_id: str,
    decided: DecidedReferral,
    screening: ScreeningIn,
    respond_by: datetime,
    flags: frozenset[ReferralFlag],
    referring_organisation: str,
    public_base_url: str,
    thin: bool = False,
    policy: Policy | None = None,
    event: Literal["referral.created", "referral.details"] = "referral.created",
    payload_format: PayloadFormat = PayloadFormat.ruta_json,
    organisation: Organisation | None = None,
    document: dict[str, Any] | None = None,
    consent_withdrawn: bool = False,
) -> OutboundReferral:
    """The minimised body for one partner (see docs/partners.md for the formats).

    ``document`` is ``screening.model_dump(mode="json")`` when the caller already made it
    (intake builds several bodies from one screening); it is only read.

    ``flags`` are the match result's flags (the decided flags plus ``interpreter_needed``).
    In thin mode the body carries ids, service, urgency, deadline and the details link only;
    the details endpoint calls this again with ``thin=False, event="referral.details"``.
    With ``payload_format=fhir-r4`` the ``ruta-json`` body is also rendered as a FHIR R4
    Bundle whose Task is owned by ``organisation`` (the partner's); that is what is sent.
    ``consent_withdrawn`` marks a referral that stands on child-protection duty or vital
    interest after the person withdrew consent (``referral.consent_withdrawn: true``).
    """
    outbound = _build_ruta_json(
        referral_id=referral_id,
        partner_id=partner_id,
        decided=decided,
        screening=screening,
        respond_by=respond_by,
        flags=flags,
        referring_organisation=referring_organisation,
        public_base_url=public_base_url,
        thin=thin,
        policy=policy or default_policy(),
        event=event,
        document=document,
        consent_withdrawn=consent_withdrawn,
    )
    if payload_format is PayloadFormat.ruta_json:
        return outbound
    if organisation is None:
        raise ValueError("a fhir-r4 body needs the partner's organisation (the Task owner)")
    bundle = fhir.referral_bundle(
        outbound.body,
        organisation={"id": organisation.id, "name": organisation.name},
        public_base_url=public_base_url,
    )
    return OutboundReferral(
        body=outbound.body,
        data_categories=outbound.data_categories,
        fields=outbound.fields,
        thin=outbound.thin,
        payload_format=payload_format,
        fhir_bundle=bundle,
    )


def _build_ruta_json(
    *,
    referral_id: UUID,
    partner_id: str,
    decided: DecidedReferral,
    screening: ScreeningIn,
    respond_by: datetime,
    flags: frozenset[ReferralFlag],
    referring_organisation: str,
    public_base_url: str,
    thin: bool,
    policy: Policy,
    event: str,
    document: dict[str, Any] | None,
    consent_withdrawn: bool,
) -> OutboundReferral:
    base = public_base_url.rstrip("/")
    referral: dict[str, Any] = {
        "id": str(referral_id),
        "partner_id": partner_id,
        "service": decided.service.value,
        "urgency": decided.urgency.value,
        "respond_by": respond_by.isoformat(),
        "status_url": f"{base}/v1/referrals/{referral_id}/status",
    }
    if consent_withdrawn:
        referral["consent_withdrawn"] = True
    if thin:
        referral["details_url"] = f"{base}/v1/referrals/{referral_id}/details"
        return OutboundReferral(
            body={"type": event, "format": PAYLOAD_FORMAT, "thin": True, "referral": referral},
            data_categories=(),
            fields=(),
            thin=True,
        )

    identifying = decided.identifying
    if document is None:
        document = screening.model_dump(mode="json")
    permitted = policy.allowed(decided.service, identifying, decided.recipient)
    allowed = permitted.path_set
    fields: list[str] = []
    phone_controlled = screening.safety.phone_controlled or ReferralFlag.phone_controlled in flags
    # The safe contact travels in contact_instructions below. If someone else controls the
    # person's phone, the number is useless to the partner and a call or message to it can
    # endanger the person: only the safe channel leaves.
    shared = _project(
        document,
        permitted.projection_without_phone if phone_controlled else permitted.projection,
        fields,
    )

    safety = screening.safety
    subject = screening.subject
    safe = safety.safe_contact
    no_caregiver = subject.caregiver_suspected or ReferralFlag.do_not_contact_caregiver in flags
    contact: dict[str, Any] = {
        "phone_controlled": phone_controlled,
        "do_not_contact_caregiver": no_caregiver,
    }
    notes = []
    may_contact = "safety.safe_contact.number_or_handle" in allowed
    if safe is not None and "safe_contact" in permitted.categories:
        contact["channel"] = safe.channel.value
        fields.append("safety.safe_contact.channel")
        if safe.safe_times:
            contact["safe_times"] = safe.safe_times
            fields.append("safety.safe_contact.safe_times")
        if safe.code_word:
            contact["code_word"] = safe.code_word
            fields.append("safety.safe_contact.code_word")
            notes.append("code_word")
        if may_contact and safe.number_or_handle:
            contact["number_or_handle"] = safe.number_or_handle
            fields.append("safety.safe_contact.number_or_handle")
    has_direct = "number_or_handle" in contact or (
        identifying and any(p.startswith("subject.contact.") for p in fields)
    )
    contact["contact_through_referrer"] = not has_direct or (
        safe is not None and safe.channel.value == "through_clinic"
    )
    if phone_controlled:
        notes.append("phone_controlled")
    if no_caregiver:
        notes.append("do_not_contact_caregiver")
    if contact["contact_through_referrer"]:
        notes.append("through_referrer")
    contact["instructions"] = [_INSTRUCTIONS[n] for n in notes]

    referral.update(
        {
            "legal_basis": decided.legal_basis.value,
            "identifying": identifying,
            "flags": sorted(f.value for f in flags),
            "reasons": [
                {"rule_id": r.rule_id, "guideline": r.guideline, "text": dict(r.text)}
                for r in decided.reasons
            ],
            "referring_organisation": referring_organisation,
        }
    )
    categories = sorted({policy.category_of(p) for p in fields})
    body = {
        "type": event,
        "format": PAYLOAD_FORMAT,
        "thin": False,
        "referral": referral,
        "contact_instructions": contact,
        "screening": shared,
        "data_categories": categories,
    }
    return OutboundReferral(
        body=body, data_categories=tuple(categories), fields=tuple(sorted(fields)), thin=False
    )


_NOTICE_INSTRUCTIONS = {
    "referral.revoked": {
        "es": "La persona retiró su consentimiento: suspenda la derivación y elimine los datos "
        "recibidos según su política de protección de datos. Ya no puede consultar sus datos "
        "en Ruta.",
        "en": "The person withdrew consent: stop the referral and delete the data you "
        "received under your data-protection policy. You can no longer read the person's "
        "data in Ruta.",
    },
    "referral.consent_withdrawn": {
        "es": "La persona retiró su consentimiento, pero esta derivación no se basa en él: se "
        "mantiene por {basis}. Continúe la atención y use los datos solo para ese fin.",
        "en": "The person withdrew consent, but this referral does not rest on it: it stands on "
        "{basis}. Continue the care, and use the data for that purpose only.",
    },
}
_BASIS_TEXT = {
    "child_protection_duty": {
        "es": "el deber de proteger a la niñez",
        "en": "child-protection duty",
    },
    "vital_interest": {
        "es": "interés vital (riesgo para la vida)",
        "en": "vital interest (risk to life)",
    },
}


def build_notice_body(
    *,
    kind: Literal["referral.revoked", "referral.consent_withdrawn"],
    referral_id: UUID,
    partner_id: str,
    legal_basis: str | None = None,
    payload_format: PayloadFormat = PayloadFormat.ruta_json,
    organisation: Organisation | None = None,
    public_base_url: str = "",
) -> bytes:
    """A notice after the person withdrew consent: ids and an instruction only, no data
    about the person (docs/partners.md, "Notices").

    ``referral.revoked``: the referral rested on consent; it is revoked, and the partner
    must stop and delete. ``referral.consent_withdrawn``: the referral rests on
    ``legal_basis`` (child-protection duty or vital interest) and stands. A ``fhir-r4``
    partner gets the referral's Task: ``cancelled`` for a revocation, ``requested`` with the
    business status ``consent-withdrawn`` for a referral that stands.
    """
    instruction = dict(_NOTICE_INSTRUCTIONS[kind])
    referral: dict[str, Any] = {
        "id": str(referral_id),
        "partner_id": partner_id,
        "reason": "consent_withdrawn",
        "stands": kind == "referral.consent_withdrawn",
    }
    if kind == "referral.consent_withdrawn":
        if legal_basis not in _BASIS_TEXT:
            raise ValueError(
                "a referral that stands rests on child-protection duty or vital interest"
            )
        basis = _BASIS_TEXT[legal_basis]
        instruction = {k: v.format(basis=basis[k]) for k, v in instruction.items()}
        referral["legal_basis"] = legal_basis
    referral["instruction"] = instruction
    document: dict[str, Any] = {"type": kind, "format": PAYLOAD_FORMAT, "referral": referral}
    if payload_format is PayloadFormat.fhir_r4:
        if organisation is None:
            raise ValueError("a fhir-r4 notice needs the partner's organisation")
        return fhir.dumps(
            fhir.notice_bundle(
                document,
                organisation={"id": organisation.id, "name": organisation.name},
                public_base_url=public_base_url,
            )
        )
    return _sorted_json(document)


#: What a non-identifying notification carries, by data category: statistics that cannot
#: single a person out (no ids, names, contacts, exact age, nationality, district or date).
NOTIFICATION_CATEGORIES = ("demographics", "location", "exploitation")


def age_band_of(subject: Any) -> str | None:
    """The person's age band: stated, or from the age (never the exact age)."""
    if subject.age_band is not None:
        return str(subject.age_band.value)
    if subject.age is None:
        return None
    for band, (low, high) in AGE_BAND_RANGES.items():
        if low <= subject.age <= high:
            return str(band.value)
    return None


def build_notification_body(
    *, notification_id: UUID, screening: ScreeningIn, referring_organisation: str, now: datetime
) -> tuple[bytes, tuple[str, ...]]:
    """The non-identifying notification due when an adult declines consent (statistics,
    duty to notify; docs/protocol.md, rule 5): the region, the age band, sex and the
    trafficking indicators, the month, and the referring organisation. No field that could
    identify the person, alone or together. Returns the bytes and the data categories."""
    subject = screening.subject
    indicators = screening.indicators
    data: dict[str, Any] = {
        "region": subject.region.value,
        "age_band": age_band_of(subject),
        "sex": subject.sex.value,
        "exploitation_types": sorted(v.value for v in indicators.exploitation_types),
        "control_methods": sorted(v.value for v in indicators.control_methods),
        "recruitment": sorted(v.value for v in indicators.recruitment),
        "sectors": sorted(v.value for v in indicators.sectors),
    }
    document = {
        "type": "notification.created",
        "format": PAYLOAD_FORMAT,
        "notification": {
            "id": str(notification_id),
            "reason": "adult_declined_consent",
            "month": now.strftime("%Y-%m"),
            "referring_organisation": referring_organisation,
        },
        "case": data,
    }
    return _sorted_json(document), NOTIFICATION_CATEGORIES


def _sorted_json(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON with sorted keys. orjson, because intake writes one body per
    referral; the screening's validation has already refused what it cannot write (lone
    surrogates), and every number in a body is one the schema bounds."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
