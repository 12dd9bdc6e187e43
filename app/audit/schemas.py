"""The auditors' API shapes."""

from __future__ import annotations

from datetime import datetime
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


class WalkOut(BaseModel):
    """The background full verification: the one running, or the last one."""

    status: str = Field(description="`never`, `requested`, `running`, `ok` or `failed`.")
    started_at: datetime | None
    progress_seq: int | None = Field(description="How far the running walk has got.")
    to_seq: int | None = Field(description="Where the running walk stops (the head it saw).")
    last_finished_at: datetime | None
    last_ok: bool | None
    last_to_seq: int | None
    last_first_bad_seq: int | None
    last_reason: str | None
    last_checkpoint_seq: int | None


class VerifyOut(BaseModel):
    ok: bool = Field(
        description="The events since the last verification verify, the log still reaches "
        "every verified event and stored checkpoint, and the last full walk found nothing."
    )
    scope: str = "incremental"
    from_seq: int = Field(description="Where this verification started.")
    verified_through: int = Field(description="Every event up to here is verified.")
    complete: bool = Field(description="This verification reached the head.")
    events_checked: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    checkpoints_checked: int
    first_bad_seq: int | None
    reason: str | None
    detail: str | None
    checkpoint_seq: int | None
    checkpoint_source: str | None = None
    unchecked_checkpoints: list[int] = []
    advice: list[str] = []
    full_walk: WalkOut


class ProofEntry(BaseModel):
    event: dict[str, Any] = Field(description="The event, as in an export.")
    proof: list[str] = Field(description="Its RFC 9162 inclusion proof, base64 hashes.")


class InclusionProofOut(BaseModel):
    type: str = "inclusion_proof"
    selection: dict[str, Any]
    checkpoint: CheckpointOut
    entries: list[ProofEntry]
    pending: int = Field(description="Matching events after the checkpoint (ask again later).")


class ConsistencyProofOut(BaseModel):
    type: str = "consistency_proof"
    from_size: int
    to_size: int
    old: CheckpointOut | None = Field(description="The stored checkpoint of from_size, if any.")
    new: CheckpointOut
    proof: list[str] = Field(description="The RFC 9162 consistency proof, base64 hashes.")


def _examples() -> tuple[dict[str, Any], dict[str, Any]]:
    """Proof bundles of a two-event log, signed with the documentation's example key."""
    import base64
    import hashlib
    from datetime import UTC, datetime

    from app.audit import merkle
    from app.audit.chain import GENESIS_HASH, Signer

    signer = Signer(hashlib.sha256(b"example").digest())
    moment = datetime(2026, 11, 20, 15, tzinfo=UTC)
    events = []
    prev = GENESIS_HASH
    for seq in (1, 2):
        event = EventRecord(
            seq=seq,
            prev_hash=prev,
            occurred_at="2026-11-20T14:59:59.000000Z",
            action="personal_data.read",
            actor={
                "type": "client",
                "id": "6a1c7f0e-3b2d-4c5e-8f9a-0b1c2d3e4f5a",
                "role": "auditor",
            },
            refs={
                "screening_id": "5b0f7a2e-8c1d-4e0a-9b3f-2d6c1a7e9f10",
                "referral_id": None,
                "partner_id": None,
                "subject_id": None,
                "request_id": None,
            },
            data={"fields": ["subject.name"], "purpose": "audit"},
        )
        event.hash = prev = event.compute_hash()
        events.append(event)
    leaves = [merkle.leaf_hash(bytes.fromhex(e.hash)) for e in events]
    one = signer.sign_tree(1, merkle.root_of(leaves[:1]), events[0].hash, moment)
    two = signer.sign_tree(2, merkle.root_of(leaves), events[1].hash, moment)
    inclusion = {
        "type": "inclusion_proof",
        "selection": {
            "screening_id": "5b0f7a2e-8c1d-4e0a-9b3f-2d6c1a7e9f10",
            "actions": ["referral.forwarded", "personal_data.read"],
        },
        "checkpoint": two.to_json(),
        "entries": [
            {"event": e.to_json(), "proof": [base64.b64encode(leaves[1 - i]).decode()]}
            for i, e in enumerate(events)
        ],
        "pending": 0,
    }
    consistency = {
        "type": "consistency_proof",
        "from_size": 1,
        "to_size": 2,
        "old": one.to_json(),
        "new": two.to_json(),
        "proof": [base64.b64encode(leaves[1]).decode()],
    }
    return inclusion, consistency


INCLUSION_EXAMPLE, CONSISTENCY_EXAMPLE = _examples()
