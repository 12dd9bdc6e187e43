"""Reading the audit tables: events as chain records, checkpoints, filters, online verify.

Events are read as the database stores them, not as the ORM would normalise them: a UUID or
a time kept in a non-canonical text form (upper-case hex, another time format; possible
only on SQLite, where the column is text) is handed to the verifier verbatim, so it no longer
matches the hash instead of being silently normalised back (docs/audit.md, "Stored form").
``data`` is read as its stored bytes (migration 0014) by :func:`event_data`: bytes that do
not read become :class:`app.compact.Unreadable`, which the verifier refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    LargeBinary,
    Select,
    String,
    TextClause,
    and_,
    func,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import Checkpoint, EventRecord, flat_data, format_time
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.writer import AuditConfig
from app.compact import Unreadable, read_json
from app.models.audit import AuditCheckpoint, AuditEvent
from app.models.base import matches
from app.settings import Settings

BATCH = 2000
#: The largest sequence number either engine stores (BIGINT).
MAX_SEQ = 2**63 - 1
#: SQLite's text forms (what SQLAlchemy writes, and what migration 0007's CHECKs enforce).
_SQLITE_UUID = re.compile(r"[0-9a-f]{32}")
_SQLITE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")

#: The stored columns, with UUIDs and times as stored (text on SQLite).
EVENT_COLUMNS: tuple[Any, ...] = (
    AuditEvent.seq,
    AuditEvent.prev_hash,
    AuditEvent.hash,
    type_coerce(AuditEvent.occurred_at, String).label("occurred_at"),
    AuditEvent.action,
    AuditEvent.actor_type,
    AuditEvent.actor_id,
    AuditEvent.actor_role,
    type_coerce(AuditEvent.screening_id, String).label("screening_id"),
    type_coerce(AuditEvent.referral_id, String).label("referral_id"),
    AuditEvent.partner_id,
    type_coerce(AuditEvent.subject_id, String).label("subject_id"),
    AuditEvent.request_id,
    # As stored (app.compact's bytes), read by :func:`event_data`.
    type_coerce(AuditEvent.data, LargeBinary).label("data"),
)


def _uuid_text(value: Any) -> str | None:
    """The hashed text of a UUID as read: PostgreSQL's uuid (an object, or its text from
    :func:`rows_query`) is canonical by construction; SQLite's 32 lowercase hex digits map
    one to one onto it; any other text is returned as it is. Lenient, because PostgreSQL's
    text is already the hashed form: the verifying reads on SQLite go through
    :func:`_sqlite_uuid_text`, which accepts the stored form only."""
    if value is None:
        return None
    if type(value) is str:
        if len(value) == 32 and _SQLITE_UUID.fullmatch(value):
            v = value
            return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"
        return value
    return str(value)


def _sqlite_uuid_text(value: Any) -> str | None:
    """The hashed text of a UUID as SQLite stores it: only 32 lowercase hex digits are the
    stored form. Anything else, the hyphenated text included (the very text that is hashed,
    which a query comparing the stored form would no longer find), comes back as a text no
    hash can equal."""
    if value is None:
        return None
    if type(value) is str and len(value) == 32 and _SQLITE_UUID.fullmatch(value):
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return f"not stored canonically: {value!r}"


def _time_text(value: Any) -> str:
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    text = str(value)
    if _SQLITE_TIME.fullmatch(text):
        return f"{text[:10]}T{text[11:]}Z"
    return text


def event_data(value: Any) -> Any:
    """An event's ``data`` from its stored bytes (migration 0014): the document written, or
    :class:`app.compact.Unreadable` when the bytes do not read (the verifier refuses it).
    A value already read is returned as it is."""
    if type(value) is dict or type(value) is Unreadable:
        return value
    return read_json(value)


def record_of(row: Sequence[Any]) -> EventRecord:
    """An event as stored (the columns of :data:`EVENT_COLUMNS`, in order)."""
    (seq, prev_hash, hash_, occurred_at, action, actor_type, actor_id, actor_role) = row[:8]
    screening_id, referral_id, partner_id, subject_id, request_id, data = row[8:]
    return EventRecord(
        seq=seq,
        prev_hash=prev_hash,
        occurred_at=_time_text(occurred_at),
        action=action,
        actor={"type": actor_type, "id": actor_id, "role": actor_role},
        refs={
            "screening_id": None if screening_id is None else _uuid_text(screening_id),
            "referral_id": None if referral_id is None else _uuid_text(referral_id),
            "partner_id": partner_id,
            "subject_id": None if subject_id is None else _uuid_text(subject_id),
            "request_id": request_id,
        },
        data=event_data(data),
        hash=hash_.hex() if isinstance(hash_, bytes) else hash_,
    )


def to_checkpoint(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(
        seq=row.seq,
        hash=row.hash,
        time=format_time(row.signed_at),
        key_id=row.key_id,
        signature=row.signature,
        root=row.root,
        note=row.note,
    )


@dataclass(frozen=True, slots=True)
class EventFilter:
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    actor_id: str | None = None
    referral_id: uuid.UUID | None = None
    partner_id: str | None = None
    screening_id: uuid.UUID | None = None
    subject_id: uuid.UUID | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.since is not None:
            query = query.where(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.occurred_at < self.until)
        if self.action is not None:
            query = query.where(matches(AuditEvent.action, self.action))
        if self.actor_id is not None:
            query = query.where(matches(AuditEvent.actor_id, self.actor_id))
        if self.referral_id is not None:
            query = query.where(AuditEvent.referral_id == self.referral_id)
        if self.partner_id is not None:
            query = query.where(matches(AuditEvent.partner_id, self.partner_id))
        if self.screening_id is not None:
            query = query.where(AuditEvent.screening_id == self.screening_id)
        if self.subject_id is not None:
            query = query.where(AuditEvent.subject_id == self.subject_id)
        return query


def events_query(
    filters: EventFilter, *, after_seq: int, limit: int, seq_window: tuple[int, int] | None
) -> Select[Any]:
    """The statement of one page: every filter's index continues with ``seq`` (migration
    0011), and a later page starts after the cursor's seq, so each page is one index range.
    ``seq_window`` is the time window as a seq range (:func:`time_window_seqs`)."""
    query = filters.apply(select(*EVENT_COLUMNS)).where(AuditEvent.seq > after_seq)
    if seq_window is not None:
        low, high = seq_window
        query = query.where(AuditEvent.seq >= low, AuditEvent.seq <= high)
    return query.order_by(AuditEvent.seq).limit(limit)


async def time_window_seqs(
    session: AsyncSession, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """The seq range of the events in ``[since, until)``, each end read from the
    ``(occurred_at, seq)`` index in one probe; None without a window. Times never decrease
    along the chain (the writer guarantees it), so the window is exactly this range; the
    time conditions stay in the query too, so an event out of order could only be left
    out, never shown wrongly."""
    if since is None and until is None:
        return None
    low, high = 1, MAX_SEQ
    if since is not None:
        first = (
            await session.execute(
                select(AuditEvent.seq)
                .where(AuditEvent.occurred_at >= since)
                .order_by(AuditEvent.occurred_at, AuditEvent.seq)
                .limit(1)
            )
        ).scalar_one_or_none()
        low = first if first is not None else MAX_SEQ
    if until is not None:
        last = (
            await session.execute(
                select(AuditEvent.seq)
                .where(AuditEvent.occurred_at < until)
                .order_by(AuditEvent.occurred_at.desc(), AuditEvent.seq.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        high = last if last is not None else 0
    return low, high


async def list_events(
    session: AsyncSession, filters: EventFilter, *, after_seq: int, limit: int
) -> list[EventRecord]:
    """One page in seq order, after ``after_seq`` (keyset pagination)."""
    window = await time_window_seqs(session, filters.since, filters.until)
    if window is not None and window[0] > window[1]:
        return []
    query = events_query(filters, after_seq=after_seq, limit=limit, seq_window=window)
    return [record_of(row) for row in await session.execute(query)]


async def head(session: AsyncSession) -> tuple[int, str | None]:
    row = (
        await session.execute(
            select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        )
    ).first()
    return (0, None) if row is None else (int(row.seq), str(row.hash))


async def event_hash(session: AsyncSession, seq: int) -> str | None:
    return (
        await session.execute(select(AuditEvent.hash).where(AuditEvent.seq == seq))
    ).scalar_one_or_none()


async def checkpoints(
    session: AsyncSession, *, from_seq: int = 0, to_seq: int | None = None
) -> list[Checkpoint]:
    query = select(AuditCheckpoint).where(AuditCheckpoint.seq >= from_seq)
    if to_seq is not None:
        query = query.where(AuditCheckpoint.seq <= to_seq)
    rows = (await session.execute(query.order_by(AuditCheckpoint.seq))).scalars()
    return [to_checkpoint(row) for row in rows]


async def latest_checkpoint(session: AsyncSession) -> Checkpoint | None:
    row = (
        await session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
    ).scalar_one_or_none()
    return None if row is None else to_checkpoint(row)


async def latest_tree_checkpoint(session: AsyncSession) -> Checkpoint | None:
    row = (
        await session.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.note.is_not(None))
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return None if row is None else to_checkpoint(row)


async def seq_range(
    session: AsyncSession,
    *,
    from_seq: int | None,
    to_seq: int | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[int, int]:
    """The contiguous seq range an export covers. Times never decrease along the chain
    (the writer guarantees it), so a time window is exactly one seq range."""
    head_seq, _ = await head(session)
    low, high = max(from_seq or 1, 1), min(to_seq or head_seq, head_seq)
    window = await time_window_seqs(session, since, until)
    if window is not None:
        low, high = max(low, window[0]), min(high, window[1])
    # An empty range is stated within the log (what an audit event's data may hold).
    return min(low, head_seq + 1), max(high, 0)


_ROW_COLUMNS = {
    # SQLite: as stored; :func:`_sqlite_forms` converts them (in SQL, CASE and GLOB per
    # column cost more than the Python below).
    "sqlite": (
        "seq, prev_hash, hash, occurred_at, action, actor_type, actor_id, actor_role, "
        "screening_id, referral_id, partner_id, subject_id, request_id, data"
    ),
    "postgresql": (
        "seq, encode(prev_hash, 'hex'), hash, to_char(occurred_at AT TIME ZONE 'UTC', "
        """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), action, actor_type, actor_id, actor_role, """
        "screening_id::text, referral_id::text, partner_id, subject_id::text, request_id, data"
    ),
}


def _digest_hex(value: Any) -> str:
    """A stored digest's hex; anything but 32 bytes (a row that escaped the CHECK) as a
    text no hash can equal."""
    if type(value) is bytes and len(value) == 32:
        return value.hex()
    return repr(value)


def _sqlite_forms(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row of SQLite's stored forms in the forms PostgreSQL's query returns: UUIDs and
    the time as hashed (:func:`_sqlite_uuid_text`, :func:`_time_text`), ``prev_hash`` as hex,
    ``hash`` as its 32 bytes (anything else as a text that cannot match)."""
    seq, prev_hash, hash_, occurred_at, action, actor_type, actor_id, actor_role = row[:8]
    screening_id, referral_id, partner_id, subject_id, request_id, data = row[8:]
    return (
        seq,
        _digest_hex(prev_hash),
        hash_ if type(hash_) is bytes and len(hash_) == 32 else repr(hash_),
        _time_text(occurred_at),
        action,
        actor_type,
        actor_id,
        actor_role,
        _sqlite_uuid_text(screening_id),
        _sqlite_uuid_text(referral_id),
        partner_id,
        _sqlite_uuid_text(subject_id),
        request_id,
        data,
    )


_SQLITE_ROWS = (
    f"SELECT {_ROW_COLUMNS['sqlite']} FROM audit_events "  # noqa: S608 (constants)
    "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)


def rows_query(dialect: str) -> TextClause:
    """Events ``after < seq <= to_seq`` in seq order, at most ``limit``, as rows of
    :func:`record_of`'s columns: on PostgreSQL with ``prev_hash``, UUIDs and times already
    in their hashed text forms and ``hash`` as its stored 32 bytes; on SQLite as stored
    (:func:`stream_rows` converts them)."""
    return text(
        f"SELECT {_ROW_COLUMNS[dialect]} FROM audit_events "  # noqa: S608 (constants)
        "WHERE seq > :after AND seq <= :to_seq ORDER BY seq LIMIT :limit"
    )


#: Integers JCS writes exactly, and the options under which orjson writes what it does.
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def canonical_row(row: Sequence[Any]) -> bytes | None:
    """The canonical body (RFC 8785) of an event read by :func:`stream_rows`: the same bytes
    as ``record_of(row).canonical_body()``, without building the record when every value
    has the usual type (texts, an integer seq, ``data`` as :func:`chain.flat_data`). None
    when the stored ``data`` does not read: there is no body to hash, and
    ``verifier.feed(record_of(row))`` says why."""
    seq, prev_hash, _, occurred_at, action, actor_type, actor_id, actor_role = row[:8]
    screening_id, referral_id, partner_id, subject_id, request_id, data = row[8:]
    if type(data) is bytes:
        data = read_json(data)
    if type(data) is Unreadable:
        return None
    if type(seq) is int and type(prev_hash) is str and _texts(row) and flat_data(data):
        try:
            return orjson.dumps(
                {
                    "action": action,
                    "actor": {"id": actor_id, "role": actor_role, "type": actor_type},
                    "data": data,
                    "occurred_at": occurred_at,
                    "prev_hash": prev_hash,
                    "refs": {
                        "partner_id": partner_id,
                        "referral_id": referral_id,
                        "request_id": request_id,
                        "screening_id": screening_id,
                        "subject_id": subject_id,
                    },
                    "seq": seq,
                },
                option=_CANONICAL,
            )
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the general path decides, as it always has
    return record_of(row).canonical_body()


def _texts(row: Sequence[Any]) -> bool:
    """occurred_at is a text (:func:`record_of` writes a null one as ``"None"``), action ..
    request_id are texts or nulls."""
    if type(row[3]) is not str:
        return False
    for value in row[4:13]:  # noqa: SIM110 (a loop: no generator per event)
        if value is not None and type(value) is not str:
            return False
    return True


async def stream_rows(
    session: AsyncSession,
    from_seq: int,
    to_seq: int,
    *,
    batch: int = BATCH,
    release_between_batches: bool = False,
) -> AsyncGenerator[Sequence[Sequence[Any]], None]:
    """Events ``from_seq..to_seq`` in order as rows of :func:`rows_query`, a batch at a time
    (keyset, bounded memory).

    ``release_between_batches`` ends the read transaction as soon as each batch is read,
    for sessions of their own: on SQLite every transaction holds the write lock (``BEGIN
    IMMEDIATE``), and a long export or walk must not block writers. Rows never change, so
    nothing is lost.
    """
    dialect = session.get_bind().dialect.name
    query, sqlite = rows_query(dialect), dialect == "sqlite"

    async def fetch(after: int) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]]
        if sqlite:
            # Through the driver: SQLAlchemy's rows cost more than the conversion.
            raw = await (await session.connection()).get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            async with driver.execute(_SQLITE_ROWS, (after, to_seq, batch)) as cursor:
                rows = [_sqlite_forms(row) for row in await cursor.fetchall()]
        else:
            params = {"after": after, "to_seq": to_seq, "limit": batch}
            rows = (await session.execute(query, params)).all()
        if release_between_batches:
            # Before the rows are used: the consumer may open a transaction of its own (on
            # SQLite it would wait for this one's write lock).
            await session.rollback()
        return rows

    # The next batch is read while this one is used (the database and its driver work
    # meanwhile); the last read is always awaited, so the session is free when we return.
    pending: asyncio.Task[Sequence[Sequence[Any]]] | None = None
    if from_seq <= to_seq:
        pending = asyncio.ensure_future(fetch(from_seq - 1))
    try:
        while pending is not None:
            rows = await pending
            pending = None
            if not rows:
                return
            last = rows[-1][0]
            if last < to_seq:
                pending = asyncio.ensure_future(fetch(last))
            yield rows
    finally:
        if pending is not None:
            # Let the read finish rather than cancel it mid-statement: the caller uses the
            # session next. Callers close the stream (contextlib.aclosing) when they stop early.
            with contextlib.suppress(Exception):
                await pending


async def stream_records(
    session: AsyncSession,
    from_seq: int,
    to_seq: int,
    *,
    batch: int = BATCH,
    release_between_batches: bool = False,
) -> AsyncGenerator[EventRecord, None]:
    """Events ``from_seq..to_seq`` in order, as records (see :func:`stream_rows`)."""
    batches = stream_rows(
        session, from_seq, to_seq, batch=batch, release_between_batches=release_between_batches
    )
    async with contextlib.aclosing(batches):
        async for rows in batches:
            for row in rows:
                yield record_of(row)


async def check_against_checkpoints(session: AsyncSession) -> VerifyReport | None:
    """What can be said without walking the chain: every stored checkpoint's event still
    exists with the hash that was signed. A report when not (the chain was truncated or
    rewritten under a checkpoint), ``None`` when they all hold.

    One indexed join, whatever the log's size: the service runs it before it signs
    anything an auditor takes away (an export)."""
    head_seq, _ = await head(session)
    # The event's 32 bytes as the checkpoint's lowercase hex.
    stored = type_coerce(AuditEvent.hash, LargeBinary)
    if session.get_bind().dialect.name == "postgresql":
        event_hex: Any = func.encode(stored, "hex")
    else:
        event_hex = func.lower(func.hex(stored))
    broken = (
        await session.execute(
            select(AuditCheckpoint.seq, AuditEvent.seq.label("event_seq"))
            .outerjoin(AuditEvent, AuditEvent.seq == AuditCheckpoint.seq)
            .where(or_(AuditEvent.seq.is_(None), and_(event_hex != AuditCheckpoint.hash)))
            .order_by(AuditCheckpoint.seq)
            .limit(1)
        )
    ).first()
    if broken is None:
        return None
    report = VerifyReport(
        ok=False,
        events_checked=0,
        first_seq=None,
        last_seq=head_seq or None,
        head_hash=None,
        checkpoints_checked=0,
        checkpoint_seq=int(broken.seq),
        checkpoint_source="database",
    )
    if broken.event_seq is None and broken.seq > head_seq:
        report.reason = "truncated"
        report.first_bad_seq = head_seq + 1
        report.detail = (
            f"a stored checkpoint covers seq {broken.seq} but the chain ends at seq {head_seq}"
        )
    else:
        report.reason = "checkpoint_mismatch"
        report.first_bad_seq = int(broken.seq)
        report.detail = f"event {broken.seq} is not the one its stored checkpoint signed"
    return report


async def verify_database(
    session: AsyncSession,
    settings: Settings,
    *,
    held: Iterable[Checkpoint] = (),
    release_between_batches: bool = False,
) -> VerifyReport:
    """Walk the whole chain in the database against every stored checkpoint, and any
    ``held`` ones an auditor kept."""
    public_key = AuditConfig.from_settings(settings).signer.public_key
    # The checkpoints before the head: each signs an event written before it or with it,
    # so every one read first lies within the head read after it unless events were
    # removed. Read after the head, one made in between looked like a cut log.
    stored = await checkpoints(session)
    head_seq, _ = await head(session)
    verifier = ChainVerifier(
        public_key,
        stored,
        held=list(held),
        log_size=head_seq,
        own_source="database",
    )
    # Keyset on the seq column; a gap or a tampered seq shows as a mismatch in the walk.
    records = stream_records(session, 1, head_seq, release_between_batches=release_between_batches)
    async with contextlib.aclosing(records):
        async for record in records:
            if not verifier.feed(record):
                break
    return verifier.finish()
