"""Browser tests: the console served by a real Ruta on loopback, driven in headless
Chromium (Debian's chromium and chromium-driver) with Selenium, with axe-core (from the npm
registry, tests/browser/package.json) injected into every page checked.

Without Chromium or axe-core they are skipped with the reason; with
``RUTA_TEST_REQUIRE_BROWSER=1`` (set by CI, which installs both) a missing one fails the
run instead, as a missing PostgreSQL does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app import audit
from app.auth import create_client
from app.db import create_engine, create_sessionmaker
from app.main import create_app
from app.models import Role
from app.settings import Environment, Settings
from tests.conftest import TEST_SECRET

REQUIRE = os.environ.get("RUTA_TEST_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("RUTA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RUTA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
AXE = Path(
    os.environ.get(
        "RUTA_TEST_AXE", Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
    )
)
#: Chromium flags for a closed network (no background requests) as root in a container.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,1000",
)


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} not found: apt-get install -y {what}"
    if not AXE.exists():
        return f"{AXE} not found: (cd tests/browser && npm install --no-package-lock)"
    return None


def _require_browser() -> None:
    reason = _missing()
    if reason is None:
        return
    if REQUIRE:
        pytest.fail("RUTA_TEST_REQUIRE_BROWSER=1 but " + reason)
    pytest.skip("browser tests skipped: " + reason)


@dataclass
class Live:
    """A Ruta serving on loopback, and the keys of its people."""

    url: str
    keys: dict[str, str]
    settings: Settings

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _keys(settings: Settings) -> dict[str, str]:
    engine = create_engine(settings.database_url)
    maker = create_sessionmaker(engine)
    audit.configure_sessionmaker(maker, settings)
    people = {
        "clinic": (Role.clinic, "Caravana de la Vida"),
        "partner": (Role.partner, "cem-browser"),
        "other_partner": (Role.partner, "otra-org"),
        "admin": (Role.admin, None),
        "auditor": (Role.auditor, None),
    }
    keys = {}
    try:
        async with maker() as session:
            for name, (role, organisation) in people.items():
                _client, key = await create_client(
                    session,
                    secret_key=settings.secret_key.get_secret_value().encode(),
                    name=f"browser-{name}",
                    role=role,
                    organisation=organisation,
                    actor=audit.system("test-setup"),
                )
                keys[name] = key
            await session.commit()
    finally:
        await engine.dispose()
    return keys


@pytest.fixture(scope="module")
def live(sqlite_template: Path) -> Iterator[Live]:
    _require_browser()
    folder = Path(tempfile.mkdtemp(prefix="ruta-browser-"))
    database = folder / "ruta.db"
    shutil.copyfile(sqlite_template, database)
    port = _free_port()
    settings = Settings(
        env=Environment.test,
        database_url=f"sqlite+aiosqlite:///{database}",
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_base_url=f"http://127.0.0.1:{port}",
        embedded_worker=True,
        worker_poll_seconds=0.2,
        rate_limit_backend="off",
    )
    keys = asyncio.run(_keys(settings))
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield Live(f"http://127.0.0.1:{port}", keys, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="ruta-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--lang=es-PE"):
        options.add_argument(flag)
    # A browser in Peru: it asks for Spanish (the console's default anyway).
    options.add_experimental_option("prefs", {"intl.accept_languages": "es-PE,es"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: Any, live: Live) -> Iterator[Any]:
    """A browser with no session of its own yet."""
    chromium.delete_all_cookies()
    chromium.get(live.url + "/console/sign-in")
    chromium.delete_all_cookies()
    yield chromium
    chromium.delete_all_cookies()
