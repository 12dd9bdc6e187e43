"""What an audit event may say: a closed vocabulary of actions, and the keys each may carry.

Events hold ids, roles, categories, codes and hashes, never personal data. The rule is
enforced, not hoped for:

* every action has an allow-list of ``data`` keys; an unknown key is refused;
* every key has one value shape (:class:`Shape`); there is no free-text shape: a string is at
  most a short code (``CODE_RE``: lowercase, no spaces, no ``@``, at most 64 characters) and
  may not look like a phone or document number (seven or more digits); some keys take only
  the values of a closed enumeration (``ENUMS``);
* lists hold at most 64 items of a scalar shape.

To record something new, add an :class:`Action` member and its allow-list here, and document
it in docs/audit.md. Never add a key that could hold a name, contact, note or code word.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

MAX_SAFE_INT = 2**53 - 1
MAX_LIST_ITEMS = 64


class AuditDataRejected(ValueError):
    """An event's ``data`` broke the no-personal-data rule. The message never quotes a value."""


class Action(StrEnum):
    """Everything the audit trail records. Values are stable: they are hashed into the chain."""

    screening_received = "screening.received"
    screening_replayed = "screening.replayed"
    decision_made = "decision.made"
    referral_created = "referral.created"
    referral_forwarded = "referral.forwarded"
    referral_attempted = "referral.attempted"
    referral_status_changed = "referral.status_changed"
    referral_escalated = "referral.escalated"
    referral_revoked = "referral.revoked"
    referral_fallback = "referral.fallback"
    notification_sent = "notification.sent"
    consent_withdrawn = "consent.withdrawn"
    personal_data_read = "personal_data.read"
    subject_erased = "subject.erased"
    partner_created = "admin.partner_created"
    partner_updated = "admin.partner_updated"
    partner_disabled = "admin.partner_disabled"
    client_created = "admin.client_created"
    client_key_rotated = "admin.client_key_rotated"
    client_revoked = "admin.client_revoked"
    rule_set_validated = "admin.rule_set_validated"
    rule_set_loaded = "admin.rule_set_loaded"
    dead_letter_replayed = "admin.dead_letter_replayed"
    delivery_replayed = "admin.delivery_replayed"
    request_denied = "request.denied"
    previous_key_used = "request.previous_key_used"
    audit_exported = "audit.exported"
    audit_verified = "audit.verified"
    console_signed_in = "console.signed_in"
    console_sign_in_failed = "console.sign_in_failed"
    console_signed_out = "console.signed_out"
    referral_assigned = "referral.assigned"
    referral_retried = "referral.retried"
    referral_closed = "referral.closed"


class Shape(StrEnum):
    code = "code"
    codes = "codes"
    hash = "hash"
    uuid = "uuid"
    int = "int"
    bool = "bool"
    timestamp = "timestamp"
    route = "route"
    version = "version"
    #: An identifier Ruta or an admin chose (partner ids, client ids): a code, digits allowed.
    ident = "ident"


#: A short code: lowercase, no spaces. Lowercase-only keeps capitalised names out.
CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:+/\-]{0,63}$")
#: Identifiers that travel as refs (request ids may be upper-case ULIDs or UUIDs).
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


def is_code(value: str) -> bool:
    """Whether ``value`` may stand in the trail as an identifier (a partner id, a request
    id): a short code, not text, and not a bare phone or document number."""
    return bool(REF_RE.fullmatch(value)) and not (value.isdigit() and len(value) >= 7)


HASH_RE = re.compile(r"^[0-9a-f]{64}$")
#: A dotted version such as 2026.11.1 (rule sets): digits, but only in short dotted groups.
VERSION_RE = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,4}){0,3}(-[a-z0-9]{1,16})?$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
ROUTE_RE = re.compile(r"^/[A-Za-z0-9_./{}\-]{0,127}$")
#: Seven or more digits in a row, perhaps split by spaces, dots or dashes: a phone or ID number.
DIGITS_RE = re.compile(r"\d(?:[\s.\-]?\d){6,}")

#: Every key any action may carry, with its shape. A key means the same in every action.
KEYS: dict[str, Shape] = {
    # screenings
    "schema_version": Shape.code,
    "personal_fields": Shape.codes,
    "categories": Shape.codes,
    "replayed": Shape.bool,
    "batch": Shape.bool,
    # decisions
    "decision_id": Shape.uuid,
    "rule_set_version": Shape.version,
    "rule_set_hash": Shape.hash,
    "rules_fired": Shape.codes,
    "legal_basis": Shape.code,
    "services": Shape.codes,
    "override": Shape.code,
    # referrals and deliveries
    "service": Shape.code,
    "recipient": Shape.code,
    "urgency": Shape.code,
    "flags": Shape.codes,
    "status": Shape.code,
    "previous_status": Shape.code,
    "reason": Shape.code,
    "delivery_id": Shape.uuid,
    "attempt": Shape.int,
    "http_status": Shape.int,
    "outcome": Shape.code,
    "payload_hash": Shape.hash,
    "fields_shared": Shape.codes,
    "due_at": Shape.timestamp,
    "next_partner_id": Shape.ident,
    # personal-data reads
    "fields": Shape.codes,
    "purpose": Shape.code,
    # admin
    "target_id": Shape.ident,
    "changed": Shape.codes,
    "role": Shape.code,
    "key_id": Shape.code,
    "previous_key_id": Shape.code,
    "valid_until": Shape.timestamp,
    "count": Shape.int,
    "standing": Shape.int,
    # requests
    "method": Shape.code,
    "route": Shape.route,
    "status_code": Shape.int,
    # the audit trail itself
    "format": Shape.code,
    "from_seq": Shape.int,
    "to_seq": Shape.int,
    "ok": Shape.bool,
    "first_bad_seq": Shape.int,
    "scope": Shape.code,
    # the console and coordinators
    "via": Shape.code,
    "overrides": Shape.codes,
}

#: Keys whose values come from a closed list.
ENUMS: dict[str, frozenset[str]] = {
    "service": frozenset({"medical", "psychological", "legal", "protection"}),
    "services": frozenset({"medical", "psychological", "legal", "protection"}),
    "recipient": frozenset(
        {"provider", "child_protection_authority", "shelter", "law_enforcement"}
    ),
    "urgency": frozenset({"routine", "urgent", "emergency"}),
    "legal_basis": frozenset({"consent", "child_protection_duty", "vital_interest"}),
    "role": frozenset({"clinic", "partner", "auditor", "admin"}),
    "method": frozenset({"get", "head", "post", "put", "patch", "delete", "options"}),
    "format": frozenset({"ndjson", "csv"}),
    # A verification of what was appended since the last one, or of the whole chain.
    "scope": frozenset({"incremental", "full"}),
    "via": frozenset({"key", "jwt"}),
    "overrides": frozenset({"out_of_area", "no_capacity", "closed_now", "excluded"}),
}

_REFERRAL = {"service", "recipient", "urgency", "flags", "legal_basis", "reason", "decision_id"}

#: Per action, the ``data`` keys allowed. Anything else is refused.
ALLOWED: dict[Action, frozenset[str]] = {
    Action.screening_received: frozenset(
        {"schema_version", "personal_fields", "categories", "batch"}
    ),
    Action.screening_replayed: frozenset({"schema_version", "batch"}),
    Action.decision_made: frozenset(
        {
            "decision_id",
            "rule_set_version",
            "rule_set_hash",
            "rules_fired",
            "legal_basis",
            "services",
            "override",
            "reason",
        }
    ),
    Action.referral_created: frozenset(_REFERRAL),
    Action.referral_forwarded: frozenset(
        {
            "delivery_id",
            "payload_hash",
            "fields_shared",
            "legal_basis",
            "service",
            "attempt",
            "http_status",
        }
    ),
    Action.referral_attempted: frozenset(
        {"delivery_id", "attempt", "http_status", "outcome", "reason", "due_at"}
    ),
    Action.referral_status_changed: frozenset({"status", "previous_status", "reason"}),
    Action.referral_escalated: frozenset({"reason", "service", "urgency", "attempt"}),
    Action.referral_revoked: frozenset({"reason", "service", "previous_status"}),
    Action.referral_fallback: frozenset({"reason", "next_partner_id", "attempt"}),
    Action.notification_sent: frozenset({"service", "reason", "delivery_id", "fields_shared"}),
    Action.consent_withdrawn: frozenset({"categories", "count", "standing"}),
    Action.personal_data_read: frozenset({"fields", "purpose", "categories"}),
    Action.subject_erased: frozenset({"reason", "count"}),
    Action.partner_created: frozenset({"target_id", "changed", "services"}),
    Action.partner_updated: frozenset({"target_id", "changed"}),
    Action.partner_disabled: frozenset({"target_id", "reason"}),
    Action.client_created: frozenset({"target_id", "role", "key_id"}),
    Action.client_key_rotated: frozenset({"target_id", "key_id", "previous_key_id", "valid_until"}),
    Action.client_revoked: frozenset({"target_id", "key_id", "previous_key_id", "reason"}),
    Action.rule_set_validated: frozenset({"rule_set_version", "rule_set_hash", "ok", "count"}),
    Action.rule_set_loaded: frozenset({"rule_set_version", "rule_set_hash", "count"}),
    Action.dead_letter_replayed: frozenset({"delivery_id", "attempt", "reason"}),
    Action.delivery_replayed: frozenset({"delivery_id", "attempt", "reason"}),
    Action.request_denied: frozenset({"method", "route", "status_code", "reason", "key_id"}),
    Action.previous_key_used: frozenset({"key_id", "method", "route"}),
    Action.audit_exported: frozenset({"format", "from_seq", "to_seq"}),
    Action.audit_verified: frozenset(
        {"ok", "first_bad_seq", "from_seq", "to_seq", "scope", "reason", "count"}
    ),
    Action.console_signed_in: frozenset({"role", "key_id", "via"}),
    Action.console_sign_in_failed: frozenset({"reason", "key_id", "via"}),
    Action.console_signed_out: frozenset({"reason"}),
    Action.referral_assigned: frozenset(
        {"reason", "next_partner_id", "attempt", "previous_status", "overrides"}
    ),
    Action.referral_retried: frozenset(
        {"reason", "outcome", "next_partner_id", "attempt", "delivery_id"}
    ),
    Action.referral_closed: frozenset({"reason", "previous_status"}),
}

assert set(ALLOWED) == set(Action), "every action needs an allow-list"
assert all(k in KEYS for keys in ALLOWED.values() for k in keys)


def _check_code(value: Any, path: str) -> None:
    if not isinstance(value, str) or not CODE_RE.fullmatch(value):
        raise AuditDataRejected(f"{path}: expected a short code (letters, digits, _.:+-)")
    if DIGITS_RE.search(value) and not UUID_RE.fullmatch(value) and not HASH_RE.fullmatch(value):
        raise AuditDataRejected(f"{path}: looks like a phone or document number")


def _check_value(shape: Shape, value: Any, path: str) -> None:
    if value is None:
        return
    match shape:
        case Shape.code:
            _check_code(value, path)
        case Shape.codes:
            if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
                raise AuditDataRejected(f"{path}: expected a list of at most 64 short codes")
            for index, item in enumerate(value):
                _check_code(item, f"{path}[{index}]")
        case Shape.hash:
            if not isinstance(value, str) or not HASH_RE.fullmatch(value):
                raise AuditDataRejected(f"{path}: expected a lowercase hex SHA-256")
        case Shape.uuid:
            if not isinstance(value, str) or not UUID_RE.fullmatch(value):
                raise AuditDataRejected(f"{path}: expected a lowercase UUID string")
        case Shape.int:
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_SAFE_INT:
                raise AuditDataRejected(f"{path}: expected an integer")
        case Shape.bool:
            if not isinstance(value, bool):
                raise AuditDataRejected(f"{path}: expected a boolean")
        case Shape.timestamp:
            if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
                raise AuditDataRejected(f"{path}: expected an RFC 3339 timestamp")
        case Shape.route:
            if not isinstance(value, str) or not ROUTE_RE.fullmatch(value):
                raise AuditDataRejected(f"{path}: expected a route template")
        case Shape.ident:
            if not isinstance(value, str) or not REF_RE.fullmatch(value):
                raise AuditDataRejected(f"{path}: expected an identifier")
        case Shape.version:
            if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
                raise AuditDataRejected(f"{path}: expected a dotted version like 2026.11.1")


def validate_data(action: Action, data: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``data`` as a plain dict if it obeys ``action``'s allow-list, else raise.

    UUIDs may be passed as :class:`uuid.UUID`; they are stored as strings.
    """
    allowed = ALLOWED[action]
    clean: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in allowed:
            raise AuditDataRejected(
                f"data.{key}: not an allowed key for {action.value} (see app/audit/vocabulary.py)"
            )
        value: Any = raw
        if value is not None and not isinstance(value, str | int | bool | list):
            value = str(value)  # UUIDs, StrEnums
        if isinstance(value, list):
            value = [str(item) if not isinstance(item, str) else item for item in value]
        if key == "method" and isinstance(value, str):
            value = value.lower()
        _check_value(KEYS[key], value, f"data.{key}")
        allowed_values = ENUMS.get(key)
        if allowed_values is not None and value is not None:
            items = value if isinstance(value, list) else [value]
            if any(item not in allowed_values for item in items):
                raise AuditDataRejected(f"data.{key}: not one of {sorted(allowed_values)}")
        clean[key] = value
    return clean
