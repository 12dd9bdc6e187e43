"""Structured JSON logs (structlog), request ids, and Prometheus request metrics.

Logs never carry personal data: a processor drops any event key that names a personal
field, whatever the caller passed, and Ruta's own log calls pass ids, codes and counts only.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.audit.vocabulary import is_code
from app.metrics import child

#: Keys that must never reach a log line, at any depth of the event dict.
REDACTED_KEYS = frozenset(
    {
        "name",
        "contact",
        "phone",
        "email",
        "address",
        "date_of_birth",
        "safe_contact",
        "number_or_handle",
        "code_word",
        "safe_times",
        "notes",
        "body",
        "payload",
        "authorization",
        "api_key",
        "secret",
        "password",
    }
)
_KEY_PATTERN = re.compile(r"(ruta_[a-z0-9]{12}_)[A-Za-z0-9_-]+|whsec_[A-Za-z0-9+/=]+")


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _KEY_PATTERN.sub(lambda m: (m.group(1) or "whsec_") + "[redacted]", value)
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if str(k).lower() in REDACTED_KEYS else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in REDACTED_KEYS:
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at write time (test capture, redirections)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: Frames kept of each exception in a log line: Ruta's own (where it failed in Ruta) and
#: the last few (where it was raised), at most this many.
_FRAMES = 16
_RAISED_AT = 3
_APP_ROOT = str(Path(__file__).resolve().parent.parent) + os.sep


def _frame(frame: traceback.FrameSummary) -> str:
    filename = frame.filename
    if filename.startswith(_APP_ROOT):
        filename = filename.removeprefix(_APP_ROOT)
    elif "site-packages" + os.sep in filename:
        filename = filename.split("site-packages" + os.sep, 1)[1]
    return f"{filename}:{frame.lineno} in {frame.name}"


def _describe_exception(exc: BaseException) -> list[dict[str, Any]]:
    """The chain of an exception, innermost last: each one's type and where it passed
    through Ruta's code and was raised.

    Never its message nor its variables: a message can quote data (SQLAlchemy's
    ``[parameters: …]``, a driver's "invalid input … 'value'", a trigger's text), and a
    log line must not carry a case code, a name or a key.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    described = []
    for item in reversed(chain):
        frames = traceback.extract_tb(item.__traceback__)
        last = len(frames) - _RAISED_AT
        kept = [
            f
            for i, f in enumerate(frames)
            if i >= last or f.filename.startswith(_APP_ROOT + "app" + os.sep)
        ]
        described.append(
            {
                "type": f"{type(item).__module__}.{type(item).__qualname__}",
                "frames": [_frame(f) for f in kept[-_FRAMES:]],
            }
        )
    return described


def exception_without_values(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Turn ``exc_info`` (from ``log.exception`` or a stdlib record) into ``exception``:
    types and frames only (see :func:`_describe_exception`)."""
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("exception", None)  # a pre-rendered traceback text, if any
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        event_dict["exception"] = _describe_exception(exc_info)
    elif isinstance(exc_info, tuple) and isinstance(exc_info[1], BaseException):
        event_dict["exception"] = _describe_exception(exc_info[1])
    return event_dict


def _shared_processors() -> list[Any]:
    """What every log line goes through, whoever wrote it (Ruta's structlog calls or a
    library's standard ``logging``: uvicorn, SQLAlchemy, Alembic, asyncio, warnings)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        exception_without_values,
        redact,
    ]


def json_formatter() -> logging.Formatter:
    """The standard-library formatter: a record becomes the same JSON line as Ruta's own
    (its logger's name as ``logger``, the formatted message as ``event``)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared_processors()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )


def stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(json_formatter())
    return handler


#: uvicorn's loggers: no handlers of their own, so their lines reach the root's JSON one.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
#: Libraries whose INFO lines would repeat what Ruta logs itself (httpx: every partner
#: call's URL), say nothing an operator needs (Alembic's plugins), or, if echo were ever
#: turned on, carry the SQL sent (SQLAlchemy): warnings only.
_QUIET_LOGGERS = ("sqlalchemy", "httpx", "httpcore", "alembic.runtime.plugins")


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The standard library's logging, as a ``dictConfig``: one JSON handler on stderr at
    the root. ``ruta serve`` hands it to uvicorn as its ``log_config``, so each server
    process (the supervisor and every worker it spawns) applies it before its first line.
    """
    name = level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"()": "app.observability.stderr_handler"}},
        "root": {"handlers": ["stderr"], "level": name},
        "loggers": {
            **{
                logger: {"handlers": [], "propagate": True, "level": name}
                for logger in _UVICORN_LOGGERS
            },
            # Ruta's own `request` line is the access log (route template, request id, no
            # query string, no client address); uvicorn's would carry the raw path and
            # query and the caller's address.
            "uvicorn.access": {"handlers": [], "propagate": False},
            **{logger: {"level": "WARNING"} for logger in _QUIET_LOGGERS},
        },
    }


#: The level below which Ruta's own lines are dropped, as :func:`configure_logging` last set
#: it. Read at each call rather than built into the loggers: structlog caches a logger on
#: its first use, and a level built into it would outlive a later configuration (the CLI
#: starts at WARNING, `ruta serve` then logs at RUTA_LOG_LEVEL).
_threshold = {"level": logging.INFO}
_LEVELS = {**logging.getLevelNamesMapping(), "EXCEPTION": logging.ERROR, "MSG": logging.INFO}


def _at_level(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _LEVELS.get(method.upper(), logging.INFO) < _threshold["level"]:
        raise structlog.DropEvent
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    """Every log line of the process as JSON on stderr, through the same processors:
    structlog's own calls and the standard library's loggers (and ``warnings``)."""
    _threshold["level"] = _LEVELS.get(level.upper(), logging.INFO)
    processors: list[Any] = [
        _at_level,
        *_shared_processors(),
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)


#: Lines waiting for their session's transaction to commit (see :func:`log_on_commit`).
_ON_COMMIT = "ruta.observability.log_on_commit"


class _HasInfo(Protocol):
    @property
    def info(self) -> dict[Any, Any]: ...


def log_on_commit(
    session: _HasInfo, logger: Any, level: str, event_name: str, **fields: Any
) -> None:
    """Log ``event_name`` when ``session``'s transaction commits, and never if it rolls back:
    a trace of what happened (a delivery attempt, a withdrawal, an admin change) rather
    than of what was tried. Fields are ids, codes, counts and times, never personal data
    (the redaction processor drops personal keys whatever is passed). Called inside a
    transaction that has begun (after the work it describes)."""
    session.info.setdefault(_ON_COMMIT, []).append((logger, level, event_name, fields))


@event.listens_for(Session, "after_commit")
def _log_committed(session: Session) -> None:
    for logger, level, event_name, fields in session.info.pop(_ON_COMMIT, ()):
        getattr(logger, level)(event_name, **fields)


@event.listens_for(Session, "after_soft_rollback")
def _forget_uncommitted(session: Session, previous_transaction: SessionTransaction) -> None:
    # Any rollback of the outermost transaction, whether or not it had reached the
    # database; a savepoint's rollback leaves the lines of the transaction around it.
    if previous_transaction.parent is None:
        session.info.pop(_ON_COMMIT, None)


def actor_fields(who: Any) -> dict[str, str | None]:
    """Who acted, for a log line: an API client by id and role (never its name, which may
    be a person's), or a system component by its code."""
    client_id = getattr(who, "client_id", None)
    if client_id is not None:
        role = getattr(who, "role", None)
        return {"actor": "client", "actor_id": str(client_id), "actor_role": str(role)}
    return {"actor": getattr(who, "type", "system"), "actor_id": getattr(who, "id", None)}


REQUESTS = Counter(
    "ruta_http_requests_total",
    "HTTP requests by route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "ruta_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _acceptable_request_id(value: str) -> bool:
    """A client's X-Request-ID is kept only if the audit trail can hold it as a code."""
    return bool(_REQUEST_ID.match(value)) and is_code(value)


log = structlog.get_logger("ruta.http")


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    # Unmatched paths are one label: raw paths could carry ids and explode cardinality.
    return str(path) if path else "unmatched"


class RequestContext:
    """Request id (accepted from X-Request-ID when well-formed), access log, metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _acceptable_request_id(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            child(REQUESTS, method, route, str(status)).inc()
            child(LATENCY, method, route).observe(elapsed)
            log.info(
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")
