"""Structured JSON logs (structlog), request ids, and Prometheus request metrics.

Logs never carry personal data: a processor drops any event key that names a personal
field, whatever the caller passed, and Ruta's own log calls pass ids, codes and counts only.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
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


def configure_logging(level: str = "INFO") -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


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
