"""The one settings object. Everything comes from the environment with the prefix ``RUTA_``."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: The development secret. The service refuses to start with it outside development mode.
DEV_SECRET = "ruta-development-secret-do-not-use-in-production"  # noqa: S105


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


def normalise_database_url(url: str) -> str:
    """Map plain URLs onto the async drivers Ruta uses (asyncpg, aiosqlite).

    Async drivers were chosen for the intake path: with 32 concurrent clients a single
    worker process spends most of its time waiting on the database, and asyncpg lets one
    event loop keep many transactions in flight (see docs/operations.md).
    """
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg://") or url.startswith("postgresql+psycopg2://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


#: The settings that hold a secret (a key, a token, a URL with a password). Each can also
#: come from a file named by ``RUTA_<NAME>_FILE`` (Docker and Kubernetes secrets).
SECRET_SETTINGS = (
    "secret_key",
    "encryption_kek",
    "encryption_kek_previous",
    "audit_signing_key",
    "metrics_token",
    "database_url",
    "migration_database_url",
    "redis_url",
)


class SecretFiles(PydanticBaseSettingsSource):
    """``RUTA_<NAME>_FILE=/run/secrets/…``: a secret setting's value read from that file
    (without its trailing newline), so a secret need not sit in the process environment,
    where ``docker inspect`` and ``/proc/<pid>/environ`` show it. Setting both
    ``RUTA_<NAME>`` and ``RUTA_<NAME>_FILE`` is refused: which one wins would be a guess."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_SETTINGS:
            variable = f"RUTA_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            if os.environ.get(variable):
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            try:
                values[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(f"{variable}_FILE: cannot read {path} ({reason})") from None
        return values


class Settings(BaseSettings):
    #: ``.env`` in the working directory is read too (below the environment, which wins):
    #: `make run` writes one holding ``RUTA_ENV=development``, so the `ruta` commands the
    #: README shows run in the same mode as the service it started. Never ship one.
    model_config = SettingsConfigDict(
        env_prefix="RUTA_", extra="ignore", env_file=".env", env_file_encoding="utf-8"
    )

    env: Environment = Environment.production
    database_url: str = Field(
        default="sqlite+aiosqlite:///./ruta.db",
        description="SQLAlchemy URL. Plain postgresql:// and sqlite:// URLs are accepted.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    #: Keys API keys' hashes and the idempotency fingerprints of screenings.
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    #: The key-encryption key for personal data at rest (32 bytes, base64).
    #: In development it is derived from the secret key.
    encryption_kek: SecretStr | None = None
    #: Earlier KEKs (base64, comma-separated), still accepted for unwrapping until
    #: `ruta keys rewrap` has moved every data key onto the current KEK.
    encryption_kek_previous: SecretStr | None = None
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=100, ge=1, le=1000)
    #: Clock skew allowed for ``screened_at`` in the future.
    screened_at_max_skew_seconds: int = Field(default=300, ge=0)
    #: The rule file; default: the protocol shipped in app/rules/default/.
    rules_path: Path | None = None
    #: The partner directory file loaded at start; default in development: the demo directory.
    partners_path: Path | None = None
    #: How long a process may reuse the partner directory it read for matching. A change
    #: committed by this process applies at once; one from another replica within this.
    #: 0 reads the directory for every screening.
    directory_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    #: How long a process may reuse a successful API-key lookup. A revocation or rotation
    #: committed by this process applies at once; one from another process (the CLI, a
    #: replica) within this. 0 looks the key up on every request.
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=30)
    #: Group commit: the most screenings one intake transaction takes from concurrent
    #: requests. Nothing waits for a group to fill; 1 gives every screening its own
    #: transaction.
    intake_group_max: int = Field(default=64, ge=1, le=1000)
    #: The cyclic garbage collector's youngest-generation threshold for server and worker
    #: processes (Python's default is 700). Intake allocates many short-lived objects per
    #: screening, and at the default the collector ran often enough to cost about a fifth
    #: of intake's CPU (docs/performance.md). 0 leaves Python's default.
    gc_threshold: int = Field(default=50_000, ge=0, le=1_000_000)
    #: Response deadlines per urgency (hours): how long a partner has to acknowledge a
    #: referral before it moves to the next one (docs/protocol.md, rule 13). Life at risk
    #: (suicidal plan or attempt, psychosis, life-threatening injury, immediate danger) has
    #: its own, shorter deadline.
    deadline_life_at_risk_hours: float = Field(default=2, gt=0)
    deadline_emergency_hours: float = Field(default=24, gt=0)
    deadline_urgent_hours: float = Field(default=72, gt=0)
    deadline_routine_hours: float = Field(default=14 * 24, gt=0)
    #: Ed25519 private key (32-byte seed, base64) that signs audit checkpoints. It is never
    #: stored in the database. In development it is derived from the secret key.
    audit_signing_key: SecretStr | None = None
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    #: The public URL partners use to fetch thin referrals and post statuses. Unset: the
    #: address `ruta serve` serves on (see ``_public_base_url_follows_the_server``).
    public_base_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"

    # --- Delivery ---
    #: Run the delivery worker inside the API process (the embedded default). Production
    #: deployments set false and run `ruta worker` processes instead.
    embedded_worker: bool = True
    worker_poll_seconds: float = Field(default=0.25, gt=0, le=10)
    #: How long a claimed delivery stays leased; a dead worker's deliveries are claimed
    #: again after this (well within 60 s).
    delivery_lease_seconds: float = Field(default=30, ge=5, le=55)

    # --- JWT bearer tokens from an external identity provider (beside API keys) ---
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    #: PEM public key file of the identity provider (RS256/ES256/EdDSA).
    jwt_public_key_file: Path | None = None
    #: Allow-list; symmetric and "none" algorithms are never accepted.
    jwt_algorithms: list[str] = ["RS256", "ES256", "EdDSA"]
    #: Claim carrying the organisation for clinic and partner tokens.
    jwt_organisation_claim: str = "org"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    # --- Abuse limits ---
    #: "memory" holds only within one process (the embedded default); "redis" holds across
    #: replicas; "off" disables limits (tests of other things, benchmarks).
    rate_limit_backend: Literal["memory", "redis", "off"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    rate_limit_clinic: int = Field(default=1200, ge=1)
    rate_limit_partner: int = Field(default=600, ge=1)
    rate_limit_auditor: int = Field(default=600, ge=1)
    rate_limit_admin: int = Field(default=600, ge=1)
    #: Failed authentications per source address per window (slows key guessing).
    rate_limit_unauthenticated: int = Field(default=60, ge=1)

    # --- Network, metrics and database roles (operations) ---
    #: The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto `ruta serve` trusts:
    #: addresses or networks, comma-separated. Empty (the default): nobody's, and the
    #: client's address is the connection's peer.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(
                    "RUTA_TRUSTED_PROXIES takes IP addresses or networks (CIDR), "
                    "comma-separated; '*' and host names are not accepted"
                ) from None
        return networks

    #: The bearer token a scraper sends for `GET /metrics`. Unset in production: metrics
    #: are not served (404); in development and tests they are open.
    metrics_token: SecretStr | None = None

    #: PostgreSQL: the URL migrations run with, as the role that owns the schema. The
    #: service always connects with RUTA_DATABASE_URL, as a role that owns nothing (see
    #: docs/operations.md, Database roles). Unset: migrations use RUTA_DATABASE_URL.
    migration_database_url: str | None = None

    @field_validator("migration_database_url")
    @classmethod
    def _normalise_migration_url(cls, value: str | None) -> str | None:
        return normalise_database_url(value) if value else None

    @property
    def migrations_url(self) -> str:
        return self.migration_database_url or self.database_url

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: Any) -> Any:
        # Compose passes an unset variable as "" (`${RUTA_METRICS_TOKEN:-}`).
        return None if value == "" else value

    @field_validator("metrics_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("RUTA_METRICS_TOKEN must be a random value of at least 32 chars")
        return value

    # --- Audit trail: Merkle tree, checkpoints, witnesses (docs/audit.md) ---
    #: The log's name in its C2SP checkpoints (and their note key name): a schema-less URL
    #: such as ``ruta.example.org/audit``; default ``ruta-audit/<key id>``. No spaces, no "+".
    audit_log_origin: str | None = Field(default=None, pattern=r"^[^\s+]+$", max_length=200)
    #: The longest an event waits for a signed checkpoint (and for the witnesses to be sent
    #: it): the background task looks every half of it and signs when the head has moved.
    audit_checkpoint_seconds: float = Field(default=60, ge=2, le=3600)
    #: Witnesses: where every checkpoint is also sent, outside the database. HTTPS endpoints
    #: (comma-separated) get each one POSTed, signed like a partner delivery (Standard
    #: Webhooks, RUTA_AUDIT_WITNESS_SECRET), with a consistency proof from the previous one;
    #: a file (on storage the database's owner cannot rewrite) gets each one appended.
    audit_witness_urls: str = ""
    audit_witness_secret: SecretStr | None = None
    audit_witness_file: Path | None = None
    #: How often the background full verification walks the whole chain from seq 1 (it also
    #: runs when a verification asks for it: the first, or one that found a problem).
    audit_full_verify_hours: float = Field(default=24, gt=0)

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}
        allowed |= {"ES512", "EdDSA"}
        refused = [alg for alg in value if alg not in allowed]
        if refused:
            raise ValueError(f"JWT algorithms not allowed: {refused} (asymmetric only)")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Self:
        if self.env is Environment.development or self.env is Environment.test:
            return self
        problems = []
        secret = self.secret_key.get_secret_value()
        if secret == DEV_SECRET or len(secret) < 32:
            problems.append("RUTA_SECRET_KEY must be set to a random value of at least 32 chars")
        if self.encryption_kek is None:
            problems.append("RUTA_ENCRYPTION_KEK must be set (32 random bytes, base64)")
        if self.audit_signing_key is None:
            problems.append("RUTA_AUDIT_SIGNING_KEY must be set (Ed25519 seed, base64)")
        if self.audit_witness_urls.strip() and self.audit_witness_secret is None:
            problems.append("RUTA_AUDIT_WITNESS_SECRET must be set to send to witnesses")
        if problems:
            raise ValueError(
                "refusing to start outside development mode with default secrets: "
                + "; ".join(problems)
                + " (set RUTA_ENV=development for a local demo)"
            )
        return self

    @property
    def witness_urls(self) -> list[str]:
        return [u for u in self.audit_witness_urls.replace(",", " ").split() if u]

    def witness_secret(self) -> str:
        """The Standard Webhooks secret (``whsec_…``) witness deliveries are signed with;
        in development and tests derived from the secret key."""
        if self.audit_witness_secret is not None:
            return self.audit_witness_secret.get_secret_value()
        if self.env is Environment.production:
            raise ValueError("RUTA_AUDIT_WITNESS_SECRET must be set to send to witnesses")
        digest = hashlib.sha256(b"ruta-witness|" + self.secret_key.get_secret_value().encode())
        return "whsec_" + base64.b64encode(digest.digest()).decode()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_issuer and self.jwt_audience and self.jwt_public_key_file)

    @property
    def loopback_only(self) -> bool:
        """Tests may only ever send to this machine."""
        return self.env is Environment.test

    @property
    def relaxed_network(self) -> bool:
        """Loopback and plain-http partner URLs are allowed only in development and tests."""
        return self.env is not Environment.production

    def kek_bytes(self) -> bytes:
        if self.encryption_kek is not None:
            raw = base64.b64decode(self.encryption_kek.get_secret_value(), validate=True)
            if len(raw) != 32:
                raise ValueError("RUTA_ENCRYPTION_KEK must decode to 32 bytes")
            return raw
        return hashlib.sha256(b"ruta-kek|" + self.secret_key.get_secret_value().encode()).digest()

    def previous_keks(self) -> list[bytes]:
        if self.encryption_kek_previous is None:
            return []
        keks = []
        for part in self.encryption_kek_previous.get_secret_value().split(","):
            raw = base64.b64decode(part.strip(), validate=True)
            if len(raw) != 32:
                raise ValueError("RUTA_ENCRYPTION_KEK_PREVIOUS entries must decode to 32 bytes")
            keks.append(raw)
        return keks

    def keks_by_id(self) -> dict[str, bytes]:
        """Every KEK that may unwrap a data key, by its id (the current one included)."""
        from app.crypto import kek_id

        return {kek_id(k): k for k in [self.kek_bytes(), *self.previous_keks()]}

    # --- Where the service is reached, secrets from files, the worker's health ---
    #: A file `ruta worker` touches while it works (its container's health check runs
    #: `ruta worker --check`, which reads it). Unset: no heartbeat.
    worker_heartbeat_path: Path | None = None

    @model_validator(mode="after")
    def _public_base_url_follows_the_server(self) -> Self:
        """Without RUTA_PUBLIC_BASE_URL, the URL of the host and port served: two instances
        on one machine must never send one another's referrals (the demo directory's
        endpoints are this URL). `ruta serve` puts the address it bound in RUTA_HOST and
        RUTA_PORT for its worker processes."""
        if "public_base_url" not in self.model_fields_set:
            self.public_base_url = served_url(self.host, self.port)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings)

    def audit_signing_seed(self) -> bytes:
        if self.audit_signing_key is not None:
            raw = base64.b64decode(self.audit_signing_key.get_secret_value(), validate=True)
            if len(raw) != 32:
                raise ValueError("RUTA_AUDIT_SIGNING_KEY must decode to a 32-byte Ed25519 seed")
            return raw
        return hashlib.sha256(b"ruta-audit|" + self.secret_key.get_secret_value().encode()).digest()

    # --- Console (app/console/) and aggregate reports (app/reports/) ---
    #: A console session ends after this long without a request (sign in again).
    console_idle_minutes: float = Field(default=30, gt=0, le=24 * 60)
    #: A console session ends this long after sign-in, however active (and a JWT sign-in no
    #: later than the token's own expiry).
    console_session_hours: float = Field(default=12, gt=0, le=7 * 24)
    #: The time zone console pages show times in (IANA name).
    console_timezone: str = "America/Lima"
    #: k-anonymity for aggregate reports: a cell counting fewer than k people is suppressed,
    #: and so are the cells that would let it be recovered from a total.
    report_min_people: int = Field(default=11, ge=2, le=1000)

    @field_validator("console_timezone")
    @classmethod
    def _console_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "RUTA_CONSOLE_TIMEZONE takes an IANA name, e.g. America/Lima"
            ) from None
        return value

    @property
    def console_cookie_secure(self) -> bool:
        """Console cookies carry ``Secure`` in production, which is served over HTTPS;
        development and tests serve plain HTTP on loopback."""
        return self.env is Environment.production


def served_url(host: str, port: int) -> str:
    """``http://host:port`` as a client reaches it: a wildcard bind address (``0.0.0.0``,
    ``::``) is reached on loopback, an IPv6 address goes in brackets."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"http://{host or '127.0.0.1'}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def tune_gc(settings: Settings) -> None:
    """Apply ``RUTA_GC_THRESHOLD`` to this process (server and worker start-up)."""
    import gc

    if settings.gc_threshold:
        # The older generations are collected every 20 and 100 younger collections (Python:
        # 10 and 10), so a full collection stays rare as well.
        gc.set_threshold(settings.gc_threshold, 20, 100)
