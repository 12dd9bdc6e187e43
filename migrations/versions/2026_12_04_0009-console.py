"""console: server-side sessions, and partners served only through the console

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-04 08:00:00.000000

- ``console_sessions``: one row per signed-in console session; the cookie's token is kept
  only as a keyed hash (app/console/sessions.py).
- ``partners.endpoint_url`` becomes optional: a partner with no endpoint is served only
  through the console, where its referrals wait (docs/partners.md, "Console-only partners").
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("via", sa.String(length=8), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("organisation", sa.String(length=200), nullable=True),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("via IN ('key', 'jwt')", name=op.f("ck_console_sessions_via_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    op.create_index(
        op.f("ix_console_sessions_client_id"), "console_sessions", ["client_id"], unique=False
    )
    op.create_index(
        "ix_console_sessions_expires_at", "console_sessions", ["expires_at"], unique=False
    )
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.alter_column("endpoint_url", existing_type=sa.String(length=2000), nullable=True)


def downgrade() -> None:
    # A console-only partner cannot be represented before this revision: refuse rather than
    # invent an endpoint for it.
    bind = op.get_bind()
    console_only = bind.execute(
        sa.text("SELECT count(*) FROM partners WHERE endpoint_url IS NULL")
    ).scalar_one()
    if console_only:
        raise RuntimeError(
            f"{console_only} console-only partner(s) have no endpoint: give them one "
            "(PATCH /v1/partners/{id}) before downgrading"
        )
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.alter_column("endpoint_url", existing_type=sa.String(length=2000), nullable=False)
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_index(op.f("ix_console_sessions_client_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
