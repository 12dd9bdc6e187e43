"""Periodic work inside the API process: time-based audit checkpoints.

Each task runs in its own short transaction; a failure is logged and retried on the next
tick, never allowed to take the process down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.settings import Settings

log = structlog.get_logger("ruta.background")


class BackgroundTasks:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._every(60.0, "audit_checkpoint", self._checkpoint)

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

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
