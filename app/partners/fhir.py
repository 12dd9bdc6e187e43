"""The ``fhir-r4`` rendering of a minimised body: a FHIR R4 ``Bundle`` of a ``Task`` and a
``ServiceRequest`` (and the ``Patient`` they are about).

This module never sees a screening. It re-encodes the minimiser's ``ruta-json`` body, which
already holds only what the need-to-know policy allows for the recipient, so the FHIR body
cannot carry more than the ``ruta-json`` body would. Every value in the Bundle comes from
that body or is one of this module's fixed codes, systems and derived ``urn:uuid`` ids.

It is called only by :mod:`app.partners.minimiser` (the only code that builds outbound
bodies). The layout is documented for partners in docs/partners.md ("The fhir-r4 payload").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

#: Ruta's urgency tiers onto FHIR request priorities (docs/protocol.md: stat/asap -> emergency).
PRIORITY = {"emergency": "stat", "urgent": "urgent", "routine": "routine"}
#: Ruta's sex onto FHIR administrative gender.
GENDER = {"female": "female", "male": "male", "intersex": "other", "unknown": "unknown"}
SERVICE_DISPLAY = {
    "medical": "Medical care",
    "psychological": "Psychological care",
    "legal": "Legal aid",
    "protection": "Protection",
}
#: FHIR's own systems.
URI_IDENTIFIER = "urn:ietf:rfc:3986"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
BCP47 = "urn:ietf:bcp:47"
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
CONTENT_TYPE = "application/fhir+json; fhirVersion=4.0"
#: Derives stable fullUrls for the resources of one referral.
_NAMESPACE = uuid.UUID("6f2b1a44-3c0e-4d55-9a8e-2f0f5c1d7b90")
#: Locale of ``text`` and ``display``; the others travel as translation extensions.
PRIMARY_LOCALE = "es"

#: ruta-json parts rendered as FHIR structure rather than as Task inputs.
_STRUCTURAL_REFERRAL_KEYS = frozenset(
    {"id", "service", "urgency", "respond_by", "reasons", "referring_organisation"}
)
_URL_KEYS = frozenset({"status_url", "details_url"})


def systems(public_base_url: str) -> dict[str, str]:
    """Ruta's code and identifier systems, under the deployment's public URL."""
    base = public_base_url.rstrip("/") + "/fhir"
    return {
        "service": f"{base}/CodeSystem/service-category",
        "rule": f"{base}/CodeSystem/rule",
        "field": f"{base}/CodeSystem/field",
        "event": f"{base}/CodeSystem/event",
        "business_status": f"{base}/CodeSystem/business-status",
        "status_reason": f"{base}/CodeSystem/status-reason",
        "organisation": f"{base}/sid/organisation",
    }


def _urn(referral_id: str, resource: str) -> str:
    if resource == "Task":
        return f"urn:uuid:{referral_id}"
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{referral_id}/{resource}')}"


def _localised(text: Mapping[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """A localised string: the primary locale's text, the others as translation
    extensions."""
    locales = sorted(text)
    primary = PRIMARY_LOCALE if PRIMARY_LOCALE in text else (locales[0] if locales else "")
    extensions = [
        {
            "url": TRANSLATION,
            "extension": [
                {"url": "lang", "valueCode": locale},
                {"url": "content", "valueString": text[locale]},
            ],
        }
        for locale in locales
        if locale != primary
    ]
    return text.get(primary, ""), extensions


def _text_element(text: Mapping[str, str], name: str) -> dict[str, Any]:
    """``{name: primary, _name: {extension: [...]}}`` for a localised string."""
    value, extensions = _localised(text)
    element: dict[str, Any] = {name: value}
    if extensions:
        element[f"_{name}"] = {"extension": extensions}
    return element


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    if isinstance(value, dict):
        return _text_element(value, "valueString")  # a localised instruction
    return {"valueString": str(value)}


#: ruta-json paths whose items are ``{locale: text}`` dictionaries, rendered as one value.
LOCALISED_PATHS = frozenset({"contact_instructions.instructions"})


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, scalar) pairs of a ruta-json subtree, in key order; a list gives one
    pair per item."""
    if isinstance(node, dict) and path not in LOCALISED_PATHS:
        for key in sorted(node):
            yield from _leaves(node[key], f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for item in node:
            yield from _leaves(item, path)
    elif node is not None:
        yield path, node


def _input(field_system: str, path: str, value: Any, *, url: bool = False) -> dict[str, Any]:
    typed = {"valueUrl": value} if url else _value(value)
    return {"type": {"coding": [{"system": field_system, "code": path}]}, **typed}


def _organisation_ref(sid: str, organisation: Mapping[str, str]) -> dict[str, Any]:
    return {
        "type": "Organization",
        "identifier": {"system": sid, "value": organisation["id"]},
        "display": organisation["name"],
    }


def _meta(event_system: str, event: str) -> dict[str, Any]:
    return {"tag": [{"system": event_system, "code": event}]}


def _patient(screening: Mapping[str, Any]) -> dict[str, Any]:
    """The Patient: only the standard elements the minimised screening already holds."""
    subject = screening.get("subject") or {}
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if "name" in subject:
        patient["name"] = [{"text": subject["name"]}]
    contact = subject.get("contact") or {}
    telecom = [
        {"system": system, "value": contact[key]}
        for key, system in (("phone", "phone"), ("email", "email"))
        if key in contact
    ]
    if telecom:
        patient["telecom"] = telecom
    if "sex" in subject:
        patient["gender"] = GENDER[subject["sex"]]
    if "date_of_birth" in subject:
        patient["birthDate"] = subject["date_of_birth"]
    address: dict[str, Any] = {}
    if "address" in contact:
        address["text"] = contact["address"]
    if "ubigeo" in subject:
        address["district"] = subject["ubigeo"]
    if "region" in subject:
        address["state"] = subject["region"]
    if address:
        patient["address"] = [{**address, "country": "PE"}]
    language = subject.get("preferred_language")
    if language and language != "other":
        patient["communication"] = [
            {"language": {"coding": [{"system": BCP47, "code": language}]}, "preferred": True}
        ]
    return patient


def _reason_concept(rule_system: str, reason: Mapping[str, Any]) -> dict[str, Any]:
    """One fired rule as one CodeableConcept: its code, and its reason as text."""
    return {
        "coding": [{"system": rule_system, "code": reason["rule_id"]}],
        **_text_element(reason["text"], "text"),
    }


def referral_bundle(
    body: Mapping[str, Any], *, organisation: Mapping[str, str], public_base_url: str
) -> dict[str, Any]:
    """The FHIR R4 Bundle for a minimised ``referral.created`` / ``referral.details`` body.

    ``organisation`` is the partner's ``{id, name}`` (the Task's owner).
    """
    sys = systems(public_base_url)
    referral = body["referral"]
    referral_id = str(referral["id"])
    service = str(referral["service"])
    priority = PRIORITY[str(referral["urgency"])]
    identifier = [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{referral_id}"}]
    owner = _organisation_ref(sys["organisation"], organisation)
    task_url, request_url, patient_url = (
        _urn(referral_id, "Task"),
        _urn(referral_id, "ServiceRequest"),
        _urn(referral_id, "Patient"),
    )
    reasons = list(referral.get("reasons") or ())

    inputs: list[dict[str, Any]] = []
    for key in sorted(set(referral) - _STRUCTURAL_REFERRAL_KEYS):
        for path, value in _leaves(referral[key], f"referral.{key}"):
            inputs.append(_input(sys["field"], path, value, url=key in _URL_KEYS))
    for part in ("contact_instructions", "screening", "data_categories"):
        if part in body:
            inputs += [_input(sys["field"], p, v) for p, v in _leaves(body[part], part)]

    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": identifier,
        "status": "requested",
        "businessStatus": {
            "coding": [{"system": sys["business_status"], "code": "awaiting-response"}],
            "text": "awaiting response",
        },
        "intent": "order",
        "priority": priority,
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": {"reference": request_url, "type": "ServiceRequest"},
        "for": {"reference": patient_url, "type": "Patient"},
        "owner": owner,
        "restriction": {"period": {"end": referral["respond_by"]}},
    }
    if "referring_organisation" in referral:
        task["requester"] = {"type": "Organization", "display": referral["referring_organisation"]}
    if len(reasons) == 1:
        task["reasonCode"] = _reason_concept(sys["rule"], reasons[0])
    elif reasons:
        # Task.reasonCode holds one concept (0..1 in R4), and the codings of a concept are
        # alternative codes for that one concept, not a list: several rules are coded one
        # concept each on ServiceRequest.reasonCode (0..*), and the Task says them in text.
        task["reasonCode"] = _text_element(
            {
                locale: "; ".join(r["text"][locale] for r in reasons if locale in r["text"])
                for locale in sorted({loc for r in reasons for loc in r["text"]})
            },
            "text",
        )
    if inputs:
        task["input"] = inputs

    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": identifier,
        "status": "active",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {"system": sys["service"], "code": service, "display": SERVICE_DISPLAY[service]}
                ]
            }
        ],
        "priority": priority,
        "code": {
            "coding": [
                {"system": sys["service"], "code": service, "display": SERVICE_DISPLAY[service]}
            ],
            "text": f"Referral: {SERVICE_DISPLAY[service].lower()}",
        },
        "subject": {"reference": patient_url, "type": "Patient"},
        "occurrencePeriod": {"end": referral["respond_by"]},
        "performer": [owner],
    }
    if "referring_organisation" in referral:
        service_request["requester"] = task["requester"]
    if reasons:
        service_request["reasonCode"] = [_reason_concept(sys["rule"], r) for r in reasons]

    return {
        "resourceType": "Bundle",
        "meta": _meta(sys["event"], str(body["type"])),
        "type": "collection",
        "entry": [
            {"fullUrl": task_url, "resource": task},
            {"fullUrl": request_url, "resource": service_request},
            {"fullUrl": patient_url, "resource": _patient(body.get("screening") or {})},
        ],
    }


#: A notice's Task status and business status, by notice type.
_NOTICE_STATUS = {
    "referral.revoked": ("cancelled", "revoked"),
    "referral.consent_withdrawn": ("requested", "consent-withdrawn"),
}


def notice_bundle(
    document: Mapping[str, Any], *, organisation: Mapping[str, str], public_base_url: str
) -> dict[str, Any]:
    """The FHIR R4 Bundle for a notice after consent was withdrawn: the referral's Task,
    ``cancelled`` for ``referral.revoked``, still ``requested`` with business status
    ``consent-withdrawn`` for ``referral.consent_withdrawn`` (the referral stands on its
    basis), with the reason and the instruction. No data about the person."""
    sys = systems(public_base_url)
    referral = document["referral"]
    referral_id = str(referral["id"])
    status, business = _NOTICE_STATUS[str(document["type"])]
    identifier = {"system": URI_IDENTIFIER, "value": f"urn:uuid:{referral_id}"}
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [identifier],
        "status": status,
        "statusReason": {
            "coding": [{"system": sys["status_reason"], "code": str(referral["reason"])}],
            **_text_element(referral["instruction"], "text"),
        },
        "businessStatus": {
            "coding": [{"system": sys["business_status"], "code": business}],
            "text": business,
        },
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": {"type": "ServiceRequest", "identifier": identifier},
        "owner": _organisation_ref(sys["organisation"], organisation),
        "input": [
            _input(sys["field"], f"referral.{key}", referral[key])
            for key in ("partner_id", "legal_basis")
            if key in referral
        ],
    }
    return {
        "resourceType": "Bundle",
        "meta": _meta(sys["event"], str(document["type"])),
        "type": "collection",
        "entry": [{"fullUrl": _urn(referral_id, "Task"), "resource": task}],
    }


# --- Ruta's code systems, served at the URLs the bodies cite ------------------------------

#: ``Bundle.meta.tag`` codes: which event a Bundle is.
EVENTS = {
    "referral.created": "A referral for the partner (delivered)",
    "referral.details": "A thin-mode referral's details (fetched by the partner)",
    "referral.revoked": "The person withdrew consent and the referral, which rested on it, "
    "is revoked",
    "referral.consent_withdrawn": "The person withdrew consent; the referral stands on "
    "child-protection duty or vital interest",
}
#: ``Task.businessStatus`` codes.
BUSINESS_STATUSES = {
    "awaiting-response": "Delivered; waiting for the partner to answer",
    "revoked": "Revoked: the person withdrew consent",
    "consent-withdrawn": "The person withdrew consent; the referral stands on its basis",
}
#: ``Task.statusReason`` codes.
STATUS_REASONS = {"consent_withdrawn": "The person withdrew consent"}

#: The served code systems: URL id -> (key in :func:`systems`, computable name, title).
CODE_SYSTEMS = {
    "service-category": ("service", "RutaServiceCategory", "Ruta service categories"),
    "rule": ("rule", "RutaRule", "Ruta decision rules (the active rule set)"),
    "field": ("field", "RutaField", "Fields of the ruta-json body, as Task.input types"),
    "event": ("event", "RutaEvent", "Events a Bundle carries (Bundle.meta.tag)"),
    "business-status": ("business_status", "RutaBusinessStatus", "Task business statuses"),
    "status-reason": ("status_reason", "RutaStatusReason", "Task status reasons"),
}


def _concepts(items: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"code": code, "display": display} for code, display in items.items()]


def code_system(
    name: str,
    *,
    public_base_url: str,
    rules: Iterable[tuple[str, str, str, Mapping[str, str]]],
    rules_version: str,
    fields: Iterable[tuple[str, str | None]],
) -> dict[str, Any] | None:
    """The FHIR R4 ``CodeSystem`` a body cites as ``<public base URL>/fhir/CodeSystem/<name>``,
    or None for a name Ruta does not define. ``rules`` are the active rule set's
    (id, description, guideline, reason by locale); ``fields`` the ruta-json field paths
    with their data category (screening fields) or None."""
    if name not in CODE_SYSTEMS:
        return None
    key, computable, title = CODE_SYSTEMS[name]
    version = "1"
    if name == "service-category":
        concepts = _concepts(SERVICE_DISPLAY)
    elif name == "rule":
        version = rules_version
        concepts = [
            {
                "code": rule_id,
                "display": description,
                "definition": guideline,
                "designation": [
                    {"language": locale, "value": text} for locale, text in sorted(reason.items())
                ],
            }
            for rule_id, description, guideline, reason in rules
        ]
    elif name == "field":
        concepts = [
            {"code": path, **({"definition": f"Data category: {c}"} if c else {})}
            for path, c in fields
        ]
    else:
        concepts = _concepts(
            {"event": EVENTS, "business-status": BUSINESS_STATUSES}.get(name, STATUS_REASONS)
        )
    return {
        "resourceType": "CodeSystem",
        "id": name,
        "url": systems(public_base_url)[key],
        "version": version,
        "name": computable,
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": "Ruta",
        "description": f"{title}. See docs/partners.md, the fhir-r4 payload.",
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }


def dumps(bundle: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON in the order built (``resourceType`` first, as FHIR readers
    expect); the same Bundle always gives the same bytes. orjson, as for ``ruta-json``
    bodies."""
    return orjson.dumps(bundle)


def is_fhir(body: bytes) -> bool:
    """Whether stored outbound bytes are a FHIR rendering (sets the Content-Type)."""
    return body.startswith(b'{"resourceType":')
