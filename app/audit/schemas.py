"""The auditors' API shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.audit.chain import Checkpoint, EventRecord


class ActorOut(BaseModel):
    type: str = Field(description="`client`, `system` or `anonymous`.")
    id: str | None = Field(description="API client id, system component, or a key id.")
    role: str | None


class RefsOut(BaseModel):
    screening_id: str | None
    referral_id: str | None
    partner_id: str | None
    subject_id: str | None
    request_id: str | None


class EventOut(BaseModel):
    seq: int
    prev_hash: str
    hash: str
    occurred_at: str
    action: str
    actor: ActorOut
    refs: RefsOut
    data: dict[str, Any]

    @classmethod
    def of(cls, record: EventRecord) -> EventOut:
        return cls(
            seq=record.seq,
            prev_hash=record.prev_hash,
            hash=record.hash,
            occurred_at=record.occurred_at,
            action=record.action,
            actor=ActorOut(**record.actor),
            refs=RefsOut(**record.refs),
            data=record.data,
        )


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class CheckpointOut(BaseModel):
    type: str = "checkpoint"
    seq: int = Field(description="The tree size: the checkpoint covers events 1..seq.")
    hash: str = Field(description="The chain hash of event `seq` (signed only by version 1).")
    time: str
    key_id: str
    signature: str
    root: str | None = Field(
        default=None, description="The RFC 9162 Merkle root of events 1..seq, base64."
    )
    note: str | None = Field(
        default=None,
        description="The C2SP tlog checkpoint (signed note) stating `seq` and `root`; null "
        "for checkpoints signed before the tree (version 1).",
    )

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointOut:
        return cls(**{k: v for k, v in checkpoint.to_json().items() if k != "type"})


class CheckpointPage(BaseModel):
    key_id: str
    public_key: str
    checkpoints: list[CheckpointOut]
    next_cursor: str | None


class PublicKeyOut(BaseModel):
    algorithm: str = "Ed25519"
    key_id: str
    public_key: str = Field(description="The raw 32-byte key, base64.")
    pem: str
    origin: str = Field(description="The log's name in its checkpoints (the note key name).")
    verifier_key: str = Field(
        description="The C2SP signed-note verifier key (`origin+key ID+base64`), for "
        "transparency-log tools and witnesses."
    )


class VerifyOut(BaseModel):
    ok: bool
    events_checked: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    checkpoints_checked: int
    first_bad_seq: int | None
    reason: str | None
    detail: str | None
    checkpoint_seq: int | None
