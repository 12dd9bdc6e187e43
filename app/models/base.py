"""Declarative base with a naming convention, so Alembic names constraints the same way on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class filter_key(FunctionElement[Any]):  # noqa: N801 - a SQL function, named as one
    """The key a list filter on a text column is indexed by (migrations 0015 and 0017).

    On PostgreSQL ``hashtext(x)``: four bytes, so an index entry of ``(hashtext(x), seq)``
    or ``(hashtext(x), created_at)`` is 24 bytes, and PostgreSQL splits a full page of such
    an index where the new entry goes (each value's rows are appended at the end of its own
    run) instead of in half, which left every page of ``(x, …)`` half empty for good (docs/
    performance.md, "Audit indexes"). Two values may share a hash, so a query compares
    ``x`` itself as well (:func:`matches`). On SQLite, where index size matters to no one,
    the value itself."""

    inherit_cache = True
    name = "filter_key"


@compiles(filter_key, "postgresql")
def _filter_key_postgresql(element: filter_key, compiler: SQLCompiler, **kw: Any) -> str:
    return f"hashtext({compiler.process(element.clauses, **kw)})"


@compiles(filter_key)
def _filter_key_value(element: filter_key, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


def matches(column: Any, value: Any) -> Any:
    """``column = value``, written so the column's :class:`filter_key` index is used on
    PostgreSQL (extended statistics on ``(x, hashtext(x))`` tell its planner that the two
    conditions select the same rows)."""
    return (filter_key(column) == filter_key(value)) & (column == value)


def not_null(column: str) -> dict[str, Any]:
    """The predicate of an index of the rows that have ``column``, on both engines (a
    query on a value implies it is not null, which both planners know)."""
    where = text(f"{column} IS NOT NULL")
    return {"postgresql_where": where, "sqlite_where": where}
