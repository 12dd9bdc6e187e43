"""api key rotation: the previous key, kept for a grace period

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 06:41:11.709190
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite recreates the table to add the constraints.
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_key_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("previous_key_hash", sa.LargeBinary(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("previous_key_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("key_rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_clients_previous_key_id"), ["previous_key_id"]
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_api_clients_previous_key_complete"),
            "(previous_key_id IS NULL) = (previous_key_hash IS NULL) "
            "AND (previous_key_id IS NULL) = (previous_key_expires_at IS NULL)",
        )


def downgrade() -> None:
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_api_clients_previous_key_complete"), type_="check")
        batch_op.drop_constraint(batch_op.f("uq_api_clients_previous_key_id"), type_="unique")
        batch_op.drop_column("key_rotated_at")
        batch_op.drop_column("previous_key_expires_at")
        batch_op.drop_column("previous_key_hash")
        batch_op.drop_column("previous_key_id")
