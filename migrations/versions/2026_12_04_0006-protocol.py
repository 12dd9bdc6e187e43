"""protocol: partner roles, referral recipients, notifications, consent withdrawal

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 05:15:40.950984

- ``partners.role``: what kind of organisation a partner is (docs/protocol.md, "Partner
  roles"). Existing rows get NULL: such a partner receives nothing until its role is set
  (the next directory sync sets it for partners from the file; an admin sets it for the
  others), because an unmarked police unit must never pass for a shelter.
- ``referrals.recipient``: which kind of partner a referral may go to; existing referrals
  were all addressed to ordinary providers.
- ``deliveries.referral_id`` becomes optional and ``deliveries.screening_id`` is added: a
  non-identifying notification is a delivery about a screening, not about a referral.
- ``decisions.notification_partner_id``: where the notification went.
- ``screenings.consent_withdrawn_at``: when the person withdrew consent.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = (
    "child_protection_authority",
    "law_enforcement",
    "shelter",
    "health_facility",
    "legal_aid",
    "psychosocial",
    "notification_recipient",
)


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notification_partner_id", sa.String(length=64), nullable=True)
        )

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("screening_id", sa.Uuid(), nullable=True))
        batch_op.alter_column("referral_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_screening_id_screenings"),
            "screenings",
            ["screening_id"],
            ["id"],
        )

    roles = ", ".join(f"'{role}'" for role in ROLES)
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=32), nullable=True))
        batch_op.create_check_constraint(
            batch_op.f("ck_partners_role_known"), f"role IS NULL OR role IN ({roles})"
        )

    # Existing referrals were all addressed to ordinary providers: fill them, then drop the
    # server default so the application always states the recipient.
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recipient", sa.String(length=32), nullable=False, server_default="provider")
        )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.alter_column("recipient", existing_type=sa.String(length=32), server_default=None)

    with op.batch_alter_table("screenings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consent_withdrawn_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("screenings", schema=None) as batch_op:
        batch_op.drop_column("consent_withdrawn_at")

    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_column("recipient")

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_partners_role_known"), type_="check")
        batch_op.drop_column("role")

    # Notifications have no referral: they cannot exist in the older schema.
    op.execute(
        "DELETE FROM delivery_attempts WHERE delivery_id IN "
        "(SELECT id FROM deliveries WHERE referral_id IS NULL)"
    )
    op.execute("DELETE FROM deliveries WHERE referral_id IS NULL")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_deliveries_screening_id_screenings"), type_="foreignkey"
        )
        batch_op.alter_column("referral_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column("screening_id")

    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("notification_partner_id")
