"""Ruta's browser console: for partners without IT of their own, the coordinators who act
when a referral needs a person, and auditors (docs/console.md).

It is part of the same application: the same services, authorization matrix
(app/authorization.yaml) and audit writer as the API, on server-side sessions.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from app.console import auditor, inbox, queue, reports, signin
from app.console.web import PREFIX, STATIC_DIR, ConsoleError, console_error


def install(app: FastAPI) -> None:
    app.add_exception_handler(ConsoleError, console_error)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    for module in (signin, inbox, queue, auditor, reports):
        app.include_router(module.router)
