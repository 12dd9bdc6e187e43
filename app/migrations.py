"""Where the Alembic scripts are, how to run them from code (``ruta migrate``), and the two
database roles on PostgreSQL: the owner that migrates, and the service that only reads and
writes what it needs (``ruta db grant``).

The role that owns a table can switch its protection off: disable or drop the audit
tables' append-only triggers, replace their function, drop or truncate the table. So the
service runs as a role that owns nothing; the owner grants it the privileges below, and on
the audit tables nothing but SELECT and INSERT. The grants are computed from this table and
the live schema by :func:`grant_service_privileges`, after every migration, instead of
living in a migration of their own: the role's name is the deployment's, not the schema's,
and a table added by a later migration is covered (or refused, if it has no entry here)
without anyone remembering to write its grant. SQLite has no roles; none of this applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection


def migrations_dir() -> Path:
    packaged = Path(__file__).parent / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if database_url is not None:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


# --- the service's database role (PostgreSQL) ----------------------------------------------

_READ, _WRITE = ("SELECT",), ("SELECT", "INSERT")
_CHANGE = ("SELECT", "INSERT", "UPDATE")

#: What the service's role may do with each table, and nothing more. ``FOR UPDATE`` row
#: locks need UPDATE, which the tables locked that way have anyway.
SERVICE_PRIVILEGES: Mapping[str, tuple[str, ...]] = {
    "alembic_version": _READ,  # /readyz compares it with the head
    "audit_events": _WRITE,  # append-only
    "audit_checkpoints": _WRITE,  # append-only
    "audit_tree_nodes": _WRITE,  # append-only: the Merkle tree's stored subtrees
    "audit_verification_state": ("SELECT", "UPDATE"),  # one row: the walk's lease, progress
    "audit_witness_cursors": _CHANGE,  # each witness's position and retry state
    "api_clients": _CHANGE,  # revocation, rotation
    "partners": _CHANGE,  # directory sync, capacity, pause
    "partner_circuits": _CHANGE,
    "subjects": (*_CHANGE, "DELETE"),  # erasure; a group's unused subjects are removed
    "screenings": _CHANGE,  # consent withdrawal records its time (consent_withdrawn_at)
    "decisions": _WRITE,
    "referrals": _CHANGE,
    "referral_events": _WRITE,
    "deliveries": _CHANGE,
    "delivery_attempts": _WRITE,
    "console_sessions": (*_CHANGE, "DELETE"),  # sign-in, activity, sign-out, expiry
}

#: The tables whose protection the service's role must not be able to touch.
AUDIT_TABLES = ("audit_events", "audit_checkpoints", "audit_tree_nodes")
#: The functions those protections (and the chain lock) rest on.
AUDIT_FUNCTIONS = ("ruta_audit_refuse_change", "ruta_audit_lock_head")
#: What no role that runs the service may hold on an audit table.
_FORBIDDEN_ON_AUDIT = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER")


class RoleError(ValueError):
    """The service's role cannot be given its privileges (the message says why)."""


def service_role_of(database_url: str) -> str | None:
    """The role the service connects as: the user named in its database URL."""
    return make_url(database_url).username


async def _tables(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    )
    return sorted(rows.scalars())


async def grant_service_privileges(conn: AsyncConnection, role: str) -> list[str]:
    """Make ``role``'s privileges on the current schema exactly :data:`SERVICE_PRIVILEGES`
    (and USAGE on the sequences of the tables it inserts into); return the statements run.

    Run as the owner, in the caller's transaction. Refuses a role that does not exist, is a
    superuser or the owner itself, and a schema holding a table this module does not know.
    """
    found = (
        await conn.execute(
            text(
                "SELECT rolsuper, pg_has_role(oid, current_user, 'MEMBER') "
                "FROM pg_roles WHERE rolname = :role"
            ),
            {"role": role},
        )
    ).first()
    if found is None:
        raise RoleError(
            f"the role {role} does not exist: create it first "
            "(CREATE ROLE … LOGIN PASSWORD …, see docs/operations.md)"
        )
    if found[0]:
        raise RoleError(f"the role {role} is a superuser: it could alter the audit tables")
    if found[1]:
        raise RoleError(
            f"the role {role} is the migrating role or one of its roles: use a separate one"
        )
    tables = await _tables(conn)
    unknown = [t for t in tables if t not in SERVICE_PRIVILEGES]
    if unknown:
        raise RoleError(
            "tables without a privilege entry in app/migrations.py SERVICE_PRIVILEGES: "
            + ", ".join(unknown)
        )
    quote = conn.dialect.identifier_preparer.quote
    grantee = quote(role)
    database, schema = (
        await conn.execute(text("SELECT current_database(), current_schema()"))
    ).one()
    statements = [
        f"GRANT CONNECT ON DATABASE {quote(database)} TO {grantee}",
        f"GRANT USAGE ON SCHEMA {quote(schema)} TO {grantee}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM {grantee}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quote(schema)} FROM {grantee}",
    ]
    for table in tables:
        privileges = ", ".join(SERVICE_PRIVILEGES[table])
        statements.append(f"GRANT {privileges} ON TABLE {quote(table)} TO {grantee}")
    for sequence, table in await _owned_sequences(conn):
        if "INSERT" in SERVICE_PRIVILEGES.get(table, ()):
            statements.append(f"GRANT USAGE ON SEQUENCE {quote(sequence)} TO {grantee}")
    statements.append(
        f"GRANT EXECUTE ON FUNCTION {quote('ruta_audit_lock_head')}(bigint) TO {grantee}"
    )
    for statement in statements:
        await conn.execute(text(statement))
    return statements


async def _owned_sequences(conn: AsyncConnection) -> list[tuple[str, str]]:
    """(sequence, table) for every serial or identity column's sequence."""
    rows = await conn.execute(
        text(
            "SELECT s.relname, t.relname FROM pg_class AS s "
            "JOIN pg_depend AS d ON d.objid = s.oid AND d.deptype IN ('a', 'i') "
            "JOIN pg_class AS t ON t.oid = d.refobjid "
            "JOIN pg_namespace AS n ON n.oid = s.relnamespace "
            "WHERE s.relkind = 'S' AND n.nspname = current_schema()"
        )
    )
    return [(str(s), str(t)) for s, t in rows.all()]


async def audit_protection_problems(conn: AsyncConnection) -> list[str]:
    """Why the connected role could switch the audit trail's protection off, if it could:
    a superuser, a role that may create roles (and so join the owner's), the owner (or a
    member of the owner's role) of an audit table or function, or a role holding UPDATE,
    DELETE, TRUNCATE or TRIGGER on an audit table. Empty on SQLite, which has no roles."""
    if conn.dialect.name != "postgresql":
        return []
    problems = []
    superuser, createrole = (
        await conn.execute(
            text("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        )
    ).one()
    if superuser:
        problems.append("the role is a superuser")
    if createrole:
        problems.append("the role may create roles (CREATEROLE)")
    owned = await conn.execute(
        text(
            "SELECT c.relname FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = ANY(:names) "
            "AND pg_has_role(current_user, c.relowner, 'MEMBER') "
            "UNION ALL SELECT p.proname FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname = ANY(:functions) "
            "AND pg_has_role(current_user, p.proowner, 'MEMBER')"
        ),
        {"names": list(AUDIT_TABLES), "functions": list(AUDIT_FUNCTIONS)},
    )
    problems.extend(f"the role owns {name}" for name in sorted(set(owned.scalars())))
    held = await conn.execute(
        text(
            "SELECT t, p FROM unnest(CAST(:tables AS text[])) AS t, "
            "unnest(CAST(:privileges AS text[])) AS p "
            "WHERE CASE WHEN to_regclass(t) IS NULL THEN false "
            "ELSE has_table_privilege(current_user, t, p) END ORDER BY t, p"
        ),
        {"tables": list(AUDIT_TABLES), "privileges": list(_FORBIDDEN_ON_AUDIT)},
    )
    problems.extend(f"the role holds {p} on {t}" for t, p in held.all())
    return problems
