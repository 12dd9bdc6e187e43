"""partners: the partner directory (secrets stored encrypted)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 01:01:05.455297
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("organisation_name", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column(
            "services", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "service_area", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "eligibility", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "languages", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("capacity_available", sa.Integer(), nullable=False),
        sa.Column("capacity_maximum", sa.Integer(), nullable=False),
        sa.Column("capacity_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "hours", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("endpoint_url", sa.String(length=2000), nullable=False),
        sa.Column("payload_format", sa.String(length=16), nullable=False),
        sa.Column("thin", sa.Boolean(), nullable=False),
        sa.Column("secrets_ct", sa.LargeBinary(), nullable=True),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column(
            "overridden", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "payload_format IN ('ruta-json', 'fhir-r4')", name=op.f("ck_partners_format_known")
        ),
        sa.CheckConstraint("source IN ('file', 'api')", name=op.f("ck_partners_source_known")),
        sa.CheckConstraint("status IN ('active', 'paused')", name=op.f("ck_partners_status_known")),
        sa.CheckConstraint(
            "capacity_available >= 0 AND capacity_available <= capacity_maximum",
            name=op.f("ck_partners_capacity_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partners")),
    )
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_partners_organisation_id"), ["organisation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partners_organisation_id"))

    op.drop_table("partners")
