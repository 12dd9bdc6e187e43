"""compose.yaml, read as Docker Compose reads it (YAML merge keys, `${VAR}` interpolation),
without Docker: what each service runs, checks, mounts, publishes and is given. The schema
check against the Compose specification runs in CI (.ci/container-check)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import SECRET_SETTINGS, Environment, Settings

ROOT = Path(__file__).resolve().parents[1]
RUTA_SERVICES = ("migrate", "api", "worker")
_VARIABLE = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?::?([-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, kind, word = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {word}")
        return word if kind == "-" else ""

    return _VARIABLE.sub(one, value)


def variables() -> set[str]:
    return {m.group(1) for m in _VARIABLE.finditer(COMPOSE_TEXT) if m.group(1)}


COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
ENV_FILE = {
    "POSTGRES_PASSWORD": "owner-pw",
    "RUTA_APP_DB_PASSWORD": "app-pw",
    "REDIS_PASSWORD": "redis-pw",
    "RUTA_SECRET_KEY": "s" * 48,
    "RUTA_ENCRYPTION_KEK": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
    "RUTA_AUDIT_SIGNING_KEY": "c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M=",
    "RUTA_PUBLIC_BASE_URL": "https://ruta.example.org",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_TEXT), ENV_FILE)
    return document


def test_ruta_is_built_once_and_every_ruta_service_runs_that_image(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["migrate"]
    images = {services[name]["image"] for name in RUTA_SERVICES}
    assert images == {"ruta:local"}
    for name in RUTA_SERVICES:
        if name not in built:
            assert services[name]["pull_policy"] == "never", name  # never pulled: built


def test_the_worker_has_its_own_health_check(compose: dict[str, Any]) -> None:
    """The image's HEALTHCHECK asks :8000/healthz, which a worker does not serve."""
    worker = compose["services"]["worker"]
    assert worker["healthcheck"]["test"] == ["CMD", "ruta", "worker", "--check"]
    assert worker["environment"]["RUTA_WORKER_HEARTBEAT_PATH"]
    assert "8000" not in str(worker["healthcheck"])
    assert compose["services"]["migrate"]["healthcheck"] == {"disable": True}


def test_every_mounted_host_file_is_shipped(compose: dict[str, Any]) -> None:
    """A bind-mounted file that does not exist is mounted as a directory by Docker."""
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, not in the repository"


def test_keys_come_from_secret_files_not_the_environment(compose: dict[str, Any]) -> None:
    secrets = compose["secrets"]
    for name in RUTA_SERVICES:
        service = compose["services"][name]
        environment = service["environment"]
        for key in ("RUTA_SECRET_KEY", "RUTA_ENCRYPTION_KEK", "RUTA_AUDIT_SIGNING_KEY"):
            assert key not in environment, (name, key)
            secret = environment[f"{key}_FILE"].removeprefix("/run/secrets/")
            assert secret in service["secrets"], (name, secret)
            assert secrets[secret] == {"environment": key}
        for variable, path in environment.items():
            if variable.endswith("_FILE"):
                assert variable.removeprefix("RUTA_").removesuffix("_FILE").lower() in (
                    SECRET_SETTINGS
                )
                assert path.startswith("/run/secrets/")


def test_the_services_environment_makes_valid_production_settings(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the API container's process reads, secrets as files, is a production start."""
    for variable in list(os.environ):
        if variable.startswith("RUTA_"):
            monkeypatch.delenv(variable)
    api = compose["services"]["api"]
    for variable, value in api["environment"].items():
        if variable.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            path = tmp_path / secret
            path.write_text(ENV_FILE[compose["secrets"][secret]["environment"]] + "\n")
            value = str(path)
        monkeypatch.setenv(variable, value)
    settings = Settings()
    assert settings.env is Environment.production
    assert settings.secret_key.get_secret_value() == ENV_FILE["RUTA_SECRET_KEY"]
    assert settings.public_base_url == "https://ruta.example.org"
    assert settings.redis_url == "redis://:redis-pw@redis:6379/0"
    assert settings.database_url.startswith("postgresql+asyncpg://ruta_app:app-pw@postgres")


def test_redis_requires_a_password_and_is_health_checked(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "requirepass" in " ".join(redis["command"])
    assert "redis_password" in redis["secrets"]
    assert compose["secrets"]["redis_password"] == {"environment": "REDIS_PASSWORD"}
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert "REDIS_PASSWORD" not in " ".join(redis["command"])  # not on a command line
    assert compose["services"]["api"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(yaml.safe_load(COMPOSE_TEXT), {**ENV_FILE, "REDIS_PASSWORD": ""})


def test_nothing_is_published_on_every_interface_by_default(compose: dict[str, Any]) -> None:
    """The API's port carries /metrics too."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), (name, port)
            parts = port.split(":")
            assert len(parts) == 3, f"{name} publishes {port} on every interface"
            assert parts[0] == "127.0.0.1", (name, port)


def test_the_env_file_is_described_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("## The compose file", 1)[1].split("\n## ", 1)[0]
    assert "ruta.env" in section
    for variable in sorted(variables()):
        assert f"`{variable}`" in section, f"{variable} is not described"
