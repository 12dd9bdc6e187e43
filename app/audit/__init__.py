"""The tamper-evident audit trail: one writer, a hash chain, signed checkpoints, exports and
a verifier that works online and offline. See docs/audit.md.

Typical use in a service (the caller's transaction commits the event with the action)::

    from app import audit
    from app.audit import Action

    await audit.record(
        session,
        action=Action.screening_received,
        actor=principal,
        screening_id=screening.id,
        subject_id=subject.id,
        data={"schema_version": "1", "personal_fields": ["subject.name"]},
        request_id=request_id,
    )
"""

from app.audit.chain import Checkpoint, EventRecord, Signer
from app.audit.vocabulary import Action, AuditDataRejected
from app.audit.writer import (
    Actor,
    AuditConfig,
    AuditNotConfigured,
    actor_of,
    anonymous,
    attach,
    checkpoint_if_due,
    configure_sessionmaker,
    flush_pending,
    record,
    system,
)

__all__ = [
    "Action",
    "Actor",
    "AuditConfig",
    "AuditDataRejected",
    "AuditNotConfigured",
    "Checkpoint",
    "EventRecord",
    "Signer",
    "actor_of",
    "anonymous",
    "attach",
    "checkpoint_if_due",
    "configure_sessionmaker",
    "flush_pending",
    "record",
    "system",
]
