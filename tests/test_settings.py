"""Process tuning from the settings."""

from __future__ import annotations

import base64
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import SECRET_SETTINGS, Environment, Settings, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_the_gc_threshold_is_applied_to_the_process() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(Settings(env=Environment.test, gc_threshold=40_000))
    assert gc.get_threshold() == (40_000, 20, 100)


@pytest.mark.usefixtures("restore_gc")
def test_zero_leaves_python_s_default() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(Settings(env=Environment.test, gc_threshold=0))
    assert gc.get_threshold() == (700, 10, 10)


def test_the_default_is_raised_and_bounded() -> None:
    assert Settings(env=Environment.test).gc_threshold == 50_000
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings(env=Environment.test, gc_threshold=-1)


def test_trusted_proxies_are_addresses_or_networks_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(env=Environment.test).trusted_proxies == []
    monkeypatch.setenv("RUTA_TRUSTED_PROXIES", " 10.0.0.5, 10.1.0.0/16,fd00::1 ")
    assert Settings(env=Environment.test).trusted_proxies == [
        "10.0.0.5/32",
        "10.1.0.0/16",
        "fd00::1/128",
    ]


@pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.0/33", "10.0.0.5,*"])
def test_trusted_proxies_refuse_wildcards_and_names(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RUTA_TRUSTED_PROXIES", value)
    with pytest.raises(ValueError, match="RUTA_TRUSTED_PROXIES takes IP addresses"):
        Settings(env=Environment.test)


def test_every_secret_setting_can_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Docker and Kubernetes secrets are files (/run/secrets/…): the value need not sit in
    the environment, where `docker inspect` shows it."""
    kek = base64.b64encode(b"k" * 32).decode()
    seed = base64.b64encode(b"s" * 32).decode()
    values = {
        "secret_key": "file-secret-" + "x" * 40,
        "encryption_kek": kek,
        "encryption_kek_previous": base64.b64encode(b"p" * 32).decode(),
        "audit_signing_key": seed,
        "metrics_token": "t" * 40,
        "database_url": "postgresql://ruta_app:pw-from-file@db:5432/ruta",
        "migration_database_url": "postgresql://ruta_owner:pw2@db:5432/ruta",
        "redis_url": "redis://:redis-pw@redis:6379/0",
    }
    assert set(values) == set(SECRET_SETTINGS)
    for name, value in values.items():
        path = tmp_path / name
        path.write_text(value + "\n")  # as `echo` and most secret stores write it
        monkeypatch.setenv(f"RUTA_{name.upper()}_FILE", str(path))
    settings = Settings(env=Environment.production)
    assert settings.secret_key.get_secret_value() == values["secret_key"]
    assert settings.kek_bytes() == b"k" * 32
    assert settings.previous_keks() == [b"p" * 32]
    assert settings.audit_signing_seed() == b"s" * 32
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "t" * 40
    assert settings.database_url == "postgresql+asyncpg://ruta_app:pw-from-file@db:5432/ruta"
    assert settings.migrations_url == "postgresql+asyncpg://ruta_owner:pw2@db:5432/ruta"
    assert settings.redis_url == values["redis_url"]


def test_a_secret_set_twice_or_unreadable_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "secret_key"
    path.write_text("CANARY-" + "x" * 40)
    monkeypatch.setenv("RUTA_SECRET_KEY_FILE", str(path))
    monkeypatch.setenv("RUTA_SECRET_KEY", "y" * 40)
    with pytest.raises(ValueError, match="set RUTA_SECRET_KEY or RUTA_SECRET_KEY_FILE, not both"):
        Settings(env=Environment.test)
    monkeypatch.delenv("RUTA_SECRET_KEY")
    monkeypatch.setenv("RUTA_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="RUTA_SECRET_KEY_FILE: cannot read") as refused:
        Settings(env=Environment.test)
    assert "CANARY" not in str(refused.value)


def test_without_a_public_base_url_it_is_the_address_served() -> None:
    assert Settings(env=Environment.test).public_base_url == "http://127.0.0.1:8000"
    assert Settings(env=Environment.test, port=8123).public_base_url == "http://127.0.0.1:8123"
    assert (
        Settings(env=Environment.test, host="0.0.0.0", port=9000).public_base_url  # noqa: S104
        == "http://127.0.0.1:9000"
    )
    assert Settings(env=Environment.test, host="::", port=9000).public_base_url == (
        "http://[::1]:9000"
    )
    assert Settings(env=Environment.test, host="fd00::5", port=1).public_base_url == (
        "http://[fd00::5]:1"
    )
    chosen = Settings(env=Environment.test, port=9000, public_base_url="https://ruta.example.org")
    assert chosen.public_base_url == "https://ruta.example.org"


def test_the_dotenv_file_is_read_below_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("RUTA_ENV=development\nRUTA_LOG_LEVEL=DEBUG\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUTA_ENV", raising=False)
    monkeypatch.delenv("RUTA_LOG_LEVEL", raising=False)
    assert Settings().env is Environment.development
    monkeypatch.setenv("RUTA_LOG_LEVEL", "WARNING")
    assert Settings().log_level == "WARNING"
