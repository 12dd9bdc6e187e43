"""Checks for fhir-r4 bodies, written independently of app/partners/fhir.py.

``validate`` parses a body with the fhir.resources models (R4B, 4.3.0: the R4 4.0.1 models
need pydantic 1, see docs/partners.md) and then checks what those models do not: the R4
required value sets of the coded elements Ruta uses, and that every internal reference
resolves inside the Bundle.
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle

#: R4 (4.0.1) required value sets, copied from the specification.
TASK_STATUS = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}
REQUEST_INTENT = {
    "unknown",
    "proposal",
    "plan",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
    "directive",
}
REQUEST_PRIORITY = {"routine", "urgent", "asap", "stat"}
REQUEST_STATUS = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
BUNDLE_TYPE = {
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
}
GENDER = {"male", "female", "other", "unknown"}
TELECOM_SYSTEM = {"phone", "fax", "email", "pager", "url", "sms", "other"}


def validate(body: bytes) -> dict[str, Any]:
    """Parse and check a fhir-r4 body; return it as JSON."""
    Bundle.model_validate_json(body)  # raises on any structural error
    document: dict[str, Any] = json.loads(body)
    assert document["resourceType"] == "Bundle"
    assert document["type"] in BUNDLE_TYPE
    urls = [entry["fullUrl"] for entry in document["entry"]]
    assert len(urls) == len(set(urls)), "duplicate fullUrl"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in document["entry"]:
        resource = entry["resource"]
        by_type.setdefault(resource["resourceType"], []).append(resource)
    for task in by_type.get("Task", []):
        assert task["status"] in TASK_STATUS
        assert task["intent"] in REQUEST_INTENT
        assert task.get("priority", "routine") in REQUEST_PRIORITY
        for name in ("focus", "for"):
            ref = task.get(name, {}).get("reference")
            assert ref is None or ref in urls, f"Task.{name} does not resolve"
    for request in by_type.get("ServiceRequest", []):
        assert request["status"] in REQUEST_STATUS
        assert request["intent"] in REQUEST_INTENT
        assert request.get("priority", "routine") in REQUEST_PRIORITY
        assert request["subject"]["reference"] in urls
    for patient in by_type.get("Patient", []):
        assert patient.get("gender", "unknown") in GENDER
        assert all(t["system"] in TELECOM_SYSTEM for t in patient.get("telecom", []))
    return document


def resources(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == kind]


def one(document: dict[str, Any], kind: str) -> dict[str, Any]:
    found = resources(document, kind)
    assert len(found) == 1, (kind, len(found))
    return found[0]


def inputs(task: dict[str, Any]) -> list[tuple[str, Any]]:
    """(code, value) of each Task.input."""
    out = []
    for item in task.get("input", []):
        (coding,) = item["type"]["coding"]
        values = [v for k, v in item.items() if k.startswith("value")]
        assert len(values) == 1, item
        out.append((coding["code"], values[0]))
    return out


def strings(node: Any) -> list[str]:
    """Every string value in a JSON document (not keys)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def scalars(node: Any) -> list[Any]:
    """Every number and boolean in a JSON document."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in scalars(v)]
    if isinstance(node, list):
        return [s for v in node for s in scalars(v)]
    return [node] if isinstance(node, bool | int | float) else []
