"""The auditors' API: events with filters, verification, checkpoints, exports, public key."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action, note, proofs, store, verification
from app.audit.chain import public_key_b64, public_key_pem
from app.audit.export import Format, chunks, prepare_export
from app.audit.schemas import (
    CONSISTENCY_EXAMPLE,
    INCLUSION_EXAMPLE,
    CheckpointOut,
    CheckpointPage,
    ConsistencyProofOut,
    EventOut,
    EventPage,
    InclusionProofOut,
    PublicKeyOut,
    VerifyOut,
)
from app.deps import AuditorDep, SessionDep, SettingsDep
from app.errors import BadRequest, field_error
from app.openapi import IsoDatetime, ok, problem, responses
from app.schemas import examples

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=responses(400, 404))

MAX_LIMIT = 500
#: Abridged (…): real lines carry every field; see docs/audit.md.
EXPORT_NDJSON_EXAMPLE = (
    '{"type":"header","format":"ruta-audit-export","from_seq":1,"to_seq":18,"key_id":"da28…",…}\n'
    '{"type":"event","seq":1,"prev_hash":"0000…","hash":"3313…","action":"admin.client_created",…}\n'
    '{"type":"checkpoint","seq":18,"hash":"c288…","key_id":"da28…","signature":"…"}\n'
)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, seq = raw.partition(":")
        # A cursor holds a stored seq: at most 19 digits, never beyond BIGINT.
        if prefix != "audit" or not seq.isdigit() or len(seq) > 19 or int(seq) > store.MAX_SEQ:
            raise ValueError
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            "The cursor is not valid; use `next_cursor` as returned.",
            errors=[field_error(("query", "cursor"), "not a cursor this service issued", "cursor")],
        ) from None


def utc_times(**times: datetime | None) -> dict[str, datetime | None]:
    """Query times in UTC; a time without an offset, or one whose UTC form is out of range
    (``9999-12-31T23:59:59-14:00``), is a 400 naming the parameter."""
    out: dict[str, datetime | None] = {}
    for name, moment in times.items():
        if moment is None:
            out[name] = None
            continue
        if moment.tzinfo is None:
            raise BadRequest(
                "Give times with a UTC offset, e.g. 2026-11-23T00:00:00Z.",
                errors=[field_error(("query", name), "a time needs a UTC offset", "timezone")],
            )
        try:
            out[name] = moment.astimezone(UTC)
        except OverflowError:
            raise BadRequest(
                "A time is out of range.",
                errors=[field_error(("query", name), "out of range once in UTC", "datetime_range")],
            ) from None
    return out


@router.get(
    "/events",
    response_model=EventPage,
    summary="Audit events, filtered, in chain order",
    description="For auditors. Events in `seq` order (oldest first), filtered by time, "
    "action, actor (client id or system component), and the referral, partner, screening or "
    "subject they concern. Events hold ids, roles, codes and hashes, never personal data "
    "(see docs/audit.md for each action's `data` keys). Page with `next_cursor`: pass it "
    "back as `cursor` until it is null. Times need a UTC offset.",
    responses={
        **ok(examples.EVENT_PAGE, "A page of events"),
        400: problem("Invalid cursor, or a time without a UTC offset or out of range"),
    },
)
async def list_events(
    _auditor: AuditorDep,
    session: SessionDep,
    since: Annotated[IsoDatetime | None, Query(description="occurred_at ≥ since")] = None,
    until: Annotated[IsoDatetime | None, Query(description="occurred_at < until")] = None,
    action: Action | None = None,
    actor: Annotated[str | None, Query(max_length=64, description="Client id or component")] = None,
    referral_id: uuid.UUID | None = None,
    partner_id: Annotated[str | None, Query(max_length=64)] = None,
    screening_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> EventPage:
    times = utc_times(since=since, until=until)
    filters = store.EventFilter(
        since=times["since"],
        until=times["until"],
        action=action.value if action else None,
        actor_id=actor,
        referral_id=referral_id,
        partner_id=partner_id,
        screening_id=screening_id,
        subject_id=subject_id,
    )
    records = await store.list_events(
        session, filters, after_seq=decode_cursor(cursor), limit=limit + 1
    )
    more = len(records) > limit
    records = records[:limit]
    return EventPage(
        events=[EventOut.of(r) for r in records],
        next_cursor=encode_cursor(records[-1].seq) if more else None,
    )


@router.get(
    "/verify",
    response_model=VerifyOut,
    summary="Verify what was appended since the last verification, in bounded time",
    description="Checks, in well under a second at any log size: the events appended since "
    "the last verification (chain, hashes, every checkpoint stored since), that the log "
    "still reaches every verified event and stored checkpoint (nothing cut off its end), "
    "and that the stored Merkle tree still gives the latest checkpoint's signed root. "
    "`verified_through` is how far every event is now verified; `complete` is false when "
    "the work was cut short (a first verification of a large log) and the rest is left to "
    "the background full walk, whose progress and last result are in `full_walk`. "
    "`first_bad_seq` is the first sequence number that is not part of a valid chain (see "
    "docs/audit.md). A clean result proves only that the database agrees with itself and "
    "its own checkpoints; verify an export or a proof offline against checkpoints you keep "
    "to rule out a rewrite by the database's owner. The verification is recorded "
    "(`audit.verified`).",
    responses=ok(examples.VERIFY_OUT, "The verification report"),
)
async def verify(auditor: AuditorDep, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    # The request's own session: on SQLite a second one would wait on the write lock that
    # this request's transaction already holds.
    return await verification.verify_online(session, settings, auditor)


@router.get(
    "/checkpoints",
    response_model=CheckpointPage,
    summary="Signed checkpoints, for auditors to keep outside the service",
    description="For auditors. Each checkpoint is an Ed25519 signature over (`seq`, `hash`, "
    "`time`): keep them outside Ruta, and `ruta audit verify --checkpoints FILE` later "
    "proves the chain still contains exactly those events. `public_key` and `key_id` name "
    "the key that verifies them. Page with `cursor` / `next_cursor`.",
    responses={
        **ok(examples.CHECKPOINT_PAGE, "Checkpoints, oldest first"),
        400: problem("Invalid cursor"),
    },
)
async def list_checkpoints(
    _auditor: AuditorDep,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> CheckpointPage:
    signer = audit.AuditConfig.from_settings(settings).signer
    after = decode_cursor(cursor)
    found = await store.checkpoints(session, from_seq=after + 1)
    page = found[:limit]
    return CheckpointPage(
        key_id=signer.key_id,
        public_key=public_key_b64(signer.public_key),
        checkpoints=[CheckpointOut.of(c) for c in page],
        next_cursor=encode_cursor(page[-1].seq) if len(found) > limit else None,
    )


@router.get(
    "/public-key",
    response_model=PublicKeyOut,
    summary="The Ed25519 public key that verifies checkpoints",
    description="For auditors: the public half of `RUTA_AUDIT_SIGNING_KEY`, raw (base64) "
    "and as PEM, with the `key_id` each checkpoint names. Store the PEM with your exports; "
    "`ruta audit verify EXPORT --public-key PEM` verifies offline with nothing else.",
    responses=ok(examples.PUBLIC_KEY_OUT, "The public key"),
)
async def public_key(_auditor: AuditorDep, settings: SettingsDep) -> PublicKeyOut:
    signer = audit.AuditConfig.from_settings(settings).signer
    return PublicKeyOut(
        key_id=signer.key_id,
        public_key=public_key_b64(signer.public_key),
        pem=public_key_pem(signer.public_key),
        origin=signer.origin,
        verifier_key=note.verifier_key(signer.origin, signer.public_key),
    )


INCLUSION_NOTE = (
    "each with its RFC 9162 inclusion proof in the Merkle tree of a signed checkpoint: `size` "
    "names a stored checkpoint; without it a checkpoint of the current head is signed now. "
    "Save the answer and check it offline with `ruta audit verify --proof FILE --public-key "
    "KEY`, without the rest of the log. Inclusion shows the events are in the log; it does "
    "not show that no other event concerns the case."
)


@router.get(
    "/proofs/referrals/{referral_id}",
    response_model=InclusionProofOut,
    summary="Inclusion proofs for one referral's events",
    description="For auditors. Every event of the referral, " + INCLUSION_NOTE,
    responses={
        **ok(INCLUSION_EXAMPLE, "The events and their proofs"),
        404: problem("No event of this referral, or no tree checkpoint of this size"),
    },
)
async def referral_inclusion_proof(
    referral_id: uuid.UUID,
    _auditor: AuditorDep,
    session: SessionDep,
    settings: SettingsDep,
    size: Annotated[int | None, Query(ge=1, le=store.MAX_SEQ)] = None,
) -> dict[str, Any]:
    return await proofs.inclusion_bundle(session, settings, referral_id=referral_id, size=size)


@router.get(
    "/proofs/screenings/{screening_id}/disclosures",
    response_model=InclusionProofOut,
    summary="Inclusion proofs for one screening's disclosures",
    description="For auditors. Every disclosure of the screening's data "
    "(`referral.forwarded` and `personal_data.read`, as in its disclosures list), "
    + INCLUSION_NOTE,
    responses={
        **ok(INCLUSION_EXAMPLE, "The disclosures and their proofs"),
        404: problem("No event of this screening, or no tree checkpoint of this size"),
    },
)
async def disclosure_inclusion_proof(
    screening_id: uuid.UUID,
    _auditor: AuditorDep,
    session: SessionDep,
    settings: SettingsDep,
    size: Annotated[int | None, Query(ge=1, le=store.MAX_SEQ)] = None,
) -> dict[str, Any]:
    return await proofs.inclusion_bundle(session, settings, screening_id=screening_id, size=size)


@router.get(
    "/proofs/consistency",
    response_model=ConsistencyProofOut,
    summary="Consistency proof: the log signed now extends the one you kept",
    description="For auditors who kept a checkpoint (`from_size` is its `seq`): the RFC 9162 "
    "proof that the log of `to_size` events (a stored checkpoint; by default one of the "
    "current head, signed now) extends it, so nothing up to `from_size` was rewritten or "
    "removed since. Check it offline with `ruta audit verify --proof FILE --public-key KEY "
    "--checkpoints KEPT`: logarithmic in the log's size.",
    responses={
        **ok(CONSISTENCY_EXAMPLE, "The two checkpoints and the proof"),
        404: problem("No tree checkpoint of this size, or from_size beyond it"),
    },
)
async def consistency_proof(
    _auditor: AuditorDep,
    session: SessionDep,
    settings: SettingsDep,
    from_size: Annotated[int, Query(ge=1, le=store.MAX_SEQ)],
    to_size: Annotated[int | None, Query(ge=1, le=store.MAX_SEQ)] = None,
) -> dict[str, Any]:
    return await proofs.consistency_bundle(session, settings, from_size=from_size, to_size=to_size)


MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


@router.get(
    "/export",
    summary="Export a contiguous range of the chain, streamed, with a signed checkpoint",
    description="NDJSON: a signed header, the events, the stored checkpoints in range (and "
    "the latest stored checkpoint, even beyond it), and last a checkpoint signed over the "
    "last event once the events were checked on their way out. CSV: the same records, one "
    "per row. Time filters select the contiguous seq range whose events fall in the window; "
    "there are no action or actor filters here, because a filtered export could not be "
    "verified as complete. The range is in `Ruta-Audit-From-Seq` / `Ruta-Audit-To-Seq`. "
    "The service refuses (409) to export a chain that fails against its own stored "
    "checkpoints. For auditors; the export is recorded (`audit.exported`).",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export, streamed",
            "content": {
                "application/x-ndjson": {"example": EXPORT_NDJSON_EXAMPLE},
                "text/csv": {},
            },
        },
        400: problem("A time without a UTC offset, or out of range"),
        409: problem("The chain fails against the service's own checkpoints"),
    },
)
async def export(
    request: Request,
    auditor: AuditorDep,
    session: SessionDep,
    settings: SettingsDep,
    format: Literal["ndjson", "csv"] = "ndjson",
    from_seq: Annotated[int | None, Query(ge=1, le=store.MAX_SEQ)] = None,
    to_seq: Annotated[int | None, Query(ge=1, le=store.MAX_SEQ)] = None,
    since: IsoDatetime | None = None,
    until: IsoDatetime | None = None,
) -> StreamingResponse:
    times = utc_times(since=since, until=until)
    plan = await prepare_export(
        session,
        settings,
        actor=auditor,
        fmt=format,
        from_seq=from_seq,
        to_seq=to_seq,
        since=times["since"],
        until=times["until"],
    )
    low, high = plan.from_seq, plan.to_seq
    # The request's session is committed and closed when this function returns; the body
    # streams from a read-only session of its own.
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    fmt: Format = format

    async def body() -> AsyncIterator[bytes]:
        async with maker() as stream_session:
            async for chunk in chunks(stream_session, plan, fmt):
                yield chunk

    headers = {
        "Content-Disposition": f'attachment; filename="ruta-audit-{low}-{high}.{format}"',
        "Ruta-Audit-From-Seq": str(low),
        "Ruta-Audit-To-Seq": str(high),
    }
    return StreamingResponse(body(), media_type=MEDIA_TYPES[format], headers=headers)
