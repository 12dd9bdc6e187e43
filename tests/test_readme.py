"""The README's set-up says what the tests need: every service and every RUTA_TEST_ variable
the suite reads, and how CI starts each service."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_test_setting_the_suite_reads_is_in_the_readme() -> None:
    read: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        read |= set(re.findall(r"environ(?:\.get)?\(\s*\"(RUTA_TEST_[A-Z_]+)\"", path.read_text()))
    assert {"RUTA_TEST_POSTGRES_URL", "RUTA_TEST_REDIS_URL"} <= read
    missing = sorted(name for name in read if name not in README)
    assert not missing, f"the README does not mention {missing}"


def test_the_readme_says_how_ci_starts_each_service_it_needs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    setup = README.split("## Walkthrough", 1)[0]
    for service, started_by in (("PostgreSQL", "pg_ctlcluster"), ("Redis", "redis-server")):
        assert started_by in ci, f".ci/run no longer starts {service}"
        assert service in setup
        assert started_by in setup, f"the README does not say how CI starts {service}"
