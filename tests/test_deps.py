"""No route runs code in FastAPI's thread pool.

FastAPI runs a plain ``def`` endpoint or dependency in a worker thread: a thread hop, a
wake-up of the event loop and a turn of the GIL on every request. Intake is CPU-bound, so
every route and dependency here is ``async``; a new sync one fails this test, naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.deps import get_settings_dep
from app.main import create_app
from app.settings import Environment, Settings


def _is_async(call: Any) -> bool:
    target = call if inspect.isroutine(call) else getattr(call, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def _sync_calls(dependant: Dependant) -> list[str]:
    found = [name for sub in dependant.dependencies for name in _sync_calls(sub)]
    if dependant.call is not None and not _is_async(dependant.call):
        found.append(getattr(dependant.call, "__qualname__", repr(dependant.call)))
    return found


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # FastAPI keeps an included router as one route that holds the router.
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def test_every_route_and_dependency_is_async() -> None:
    app = create_app(Settings(env=Environment.development, database_url="sqlite+aiosqlite://"))
    routes = list(_api_routes(app.routes))
    assert len(routes) > 30
    assert any(r.path == "/v1/screenings" for r in routes)
    sync = {f"{r.path}: {name}" for r in routes for name in _sync_calls(r.dependant)}
    assert not sync, f"these run in the thread pool on every request: {sorted(sync)}"


def test_the_check_sees_a_sync_dependency() -> None:
    def sync_dependency() -> None:
        return None

    assert not _is_async(sync_dependency)
    assert _is_async(get_settings_dep)
