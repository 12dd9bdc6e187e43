"""The `ruta` command in-process (typer's CliRunner) against the test's database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner, Result

from app.cli import cli
from app.settings import get_settings
from tests.conftest import TEST_SECRET

Ruta = Callable[..., Result]


@pytest.fixture
def ruta(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ruta]:
    """``ruta("clients", "list")``: run a command as a user would, in this process.

    Async tests call it through ``asyncio.to_thread`` (commands run their own event loop).
    """
    monkeypatch.setenv("RUTA_ENV", "test")
    monkeypatch.setenv("RUTA_DATABASE_URL", database_url)
    monkeypatch.setenv("RUTA_SECRET_KEY", TEST_SECRET)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        get_settings.cache_clear()
        return runner.invoke(cli, list(args))

    yield invoke
    get_settings.cache_clear()
