"""Periodic work inside the API process: time-based audit checkpoints (sent on to the
witnesses), and the audit trail's verification (the frontier moved on, the full walk when
due).

Each task runs in its own short transaction; a failure is logged and retried on the next
tick, never allowed to take the process down.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import verification, witness
from app.settings import Settings

log = structlog.get_logger("ruta.background")


class BackgroundTasks:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._owner = f"api-{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        # Every half of the longest wait, so a moved head is signed within it.
        self._every(
            self._settings.audit_checkpoint_seconds / 2, "audit_checkpoint", self._checkpoint
        )
        self._every(15.0, "audit_verify", self._verify)

    def _every(self, seconds: float, name: str, job: Callable[[], Awaitable[None]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("background_job_failed", job=name, error_type=type(exc).__name__)

        self._tasks.append(asyncio.create_task(loop(), name=f"ruta-{name}"))

    async def _checkpoint(self) -> None:
        async with self._sessionmaker() as session:
            await audit.checkpoint_if_due(session, self._settings)
            await session.commit()
        await witness.deliver_due(self._sessionmaker, self._settings, self._owner)

    async def _verify(self) -> None:
        async with self._sessionmaker() as session:
            await verification.advance(session, self._settings)
            await session.commit()
        await verification.walk_if_due(self._sessionmaker, self._settings, self._owner)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
