"""Group commit for intake: the screenings of concurrent requests share one transaction.

Every screening's transaction takes the audit chain's lock, reads its head and commits, and
each statement has a fixed cost in the driver and in SQLAlchemy. One process therefore
spends most of a screening's time on the overhead of its transaction, not on its content.
The committer amortises that overhead: requests hand it their prepared screenings
(:func:`app.services.intake.prepare`), and one task per process writes whatever has
gathered as one group: one transaction, one INSERT per table, one chain append, one commit.

Nothing waits for a group to fill. A screening that arrives while the database is idle is
written at once, alone. Screenings that arrive while a group is being written form the
next group, so groups grow with the load and latency stays that of one transaction or two.
On PostgreSQL two groups are in flight at once: the next group's statements run while the
previous one waits for the audit chain's lock and its commit.

The invariants hold per screening, as before:

* a request is answered only after the commit that stored its screening: 201 means stored;
* a screening is committed with its decision, referrals, outbox rows and audit events, or
  not at all;
* one screening cannot sink another: if a group fails, each of its screenings is written
  again alone, and only the one that fails on its own gets the error;
* an id already stored (a replay, a conflict, or the same id twice in the queue) is
  answered by the request itself, once the group holding the first copy has committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.metrics import INTAKE_GROUP_RETRIES, INTAKE_GROUP_SECONDS, INTAKE_GROUP_SIZE
from app.services import intake
from app.settings import Settings

log = structlog.get_logger("ruta.intake")


@dataclass(slots=True)
class _Waiting:
    plan: intake.Plan
    future: asyncio.Future[intake.IntakeResult | None]


class GroupCommitter:
    """One per process (``app.state.intake``). ``await submit(plan)`` returns once the plan
    is committed: its result, or None when its id was already stored (answer it with
    :func:`app.services.intake.replay`). It raises what writing the plan alone raised."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings | Callable[[], Settings],
        *,
        max_group: int,
        in_flight: int | None = None,
    ) -> None:
        """``settings`` may be a callable, read for each group (the app passes its current
        settings this way). ``in_flight`` groups are written at once: by default 2 on
        PostgreSQL, so the next group's statements overlap the previous group's commit,
        and 1 on SQLite, where every transaction holds the one write lock."""
        self._sessionmaker = sessionmaker
        if in_flight is None:
            bind = sessionmaker.kw.get("bind")
            in_flight = 2 if bind is not None and bind.dialect.name == "postgresql" else 1
        self._in_flight = in_flight
        self._settings = settings if callable(settings) else (lambda: settings)
        self._max_group = max_group
        self._queue: deque[_Waiting] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: The ids of the groups being written.
        self._writing_ids: set[uuid.UUID] = set()
        #: How many emergencies lead the queue: a new one goes right behind them. Kept, not
        #: counted on each submit, which a burst of emergencies would make quadratic.
        self._front_emergencies = 0

    async def submit(self, plan: intake.Plan) -> intake.IntakeResult | None:
        loop = asyncio.get_running_loop()
        self._ensure_running(loop)
        waiting = _Waiting(plan, loop.create_future())
        if plan.emergency:
            # Emergencies go in the next group, ahead of everything queued before them (and
            # behind the emergencies already there).
            self._queue.insert(self._front_emergencies, waiting)
            self._front_emergencies += 1
        else:
            self._queue.append(waiting)
        self._wake.set()
        # If this request is cancelled, the screening may still be committed with its group;
        # the clinic's retry with the same id then gets the stored result.
        return await waiting.future

    def _count_front_emergencies(self) -> int:
        """How many emergencies are at the front of the queue (they keep their order)."""
        count = 0
        for waiting in self._queue:
            if not waiting.plan.emergency:
                break
            count += 1
        return count

    async def close(self) -> None:
        """Write what is queued, then stop."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self._closing = True
        self._wake.set()
        await task

    def _ensure_running(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        # First use, or a new event loop (tests): a fresh task and event for this loop.
        self._wake = asyncio.Event()
        self._closing = False
        self._writing_ids = set()
        # In a context of its own: it must not carry the first request's id into its logs.
        self._task = loop.create_task(
            self._run(), name="ruta-intake-committer", context=contextvars.Context()
        )

    async def _run(self) -> None:
        writing: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            writing.discard(task)
            self._wake.set()

        try:
            while True:
                if self._queue and len(writing) < self._in_flight:
                    group = self._take()
                    if group:
                        INTAKE_GROUP_SIZE.observe(len(group))
                        task = asyncio.create_task(self._write(group))
                        writing.add(task)
                        task.add_done_callback(done)
                        continue
                    # Only copies of ids still being written wait: until a group is done.
                if self._closing and not self._queue and not writing:
                    return
                await self._wake.wait()
                self._wake.clear()
        except BaseException as exc:  # cancelled: fail what this task can no longer write
            for waiting in self._queue:
                _settle(waiting, error=exc)
            self._queue.clear()
            self._front_emergencies = 0
            raise

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            await self._commit(group)
        except BaseException as exc:  # cancelled mid-write: its requests get the error
            for waiting in group:
                _settle(waiting, error=exc)
            raise
        finally:
            self._writing_ids -= {waiting.plan.id for waiting in group}

    def _take(self) -> list[_Waiting]:
        """The next group: up to ``max_group`` screenings in arrival order. A second copy
        of an id already in this group, or in a group still being written, waits until
        that group has committed, and is then answered as the replay it is. (Two groups in
        flight that both held one id could each wait on the other's rows.)"""
        group: list[_Waiting] = []
        ids: set[uuid.UUID] = set()
        later: list[_Waiting] = []
        while self._queue and len(group) < self._max_group:
            waiting = self._queue.popleft()
            if waiting.future.done():
                continue  # its request was cancelled before the group formed
            if waiting.plan.id in ids or waiting.plan.id in self._writing_ids:
                later.append(waiting)
                continue
            ids.add(waiting.plan.id)
            group.append(waiting)
        self._queue.extendleft(reversed(later))
        self._front_emergencies = self._count_front_emergencies()
        self._writing_ids |= ids
        return group

    async def _commit(self, group: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            async with self._sessionmaker() as session:
                results = await intake.write(
                    session, self._settings(), [waiting.plan for waiting in group]
                )
                await session.commit()
            INTAKE_GROUP_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0], error=exc)
                return
            # Something in the group failed (a constraint, a lost connection, a bug that
            # one screening triggers): the whole transaction is rolled back, and each
            # screening is written again on its own so only the failing one fails.
            INTAKE_GROUP_RETRIES.inc()
            log.warning("intake_group_failed", size=len(group), error=type(exc).__name__)
            for waiting in group:
                await self._commit([waiting])
            return
        for waiting, result in zip(group, results, strict=True):
            _settle(waiting, result=result)


def _settle(
    waiting: _Waiting,
    *,
    result: intake.IntakeResult | None = None,
    error: BaseException | None = None,
) -> None:
    if waiting.future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        waiting.future.cancel()
    elif error is not None:
        waiting.future.set_exception(error)
    else:
        waiting.future.set_result(result)
