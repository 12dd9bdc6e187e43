"""All models, imported here so Alembic's autogenerate and ``alembic check`` see them."""

from app.models.audit import (
    AuditCheckpoint,
    AuditEvent,
    AuditTreeNode,
    AuditVerificationState,
    AuditWitnessCursor,
)
from app.models.base import Base
from app.models.client import ApiClient, Role
from app.models.console import ConsoleSession
from app.models.delivery import Delivery, DeliveryAttempt, PartnerCircuit
from app.models.partner import PartnerRow
from app.models.referral import Decision, Referral, ReferralEvent
from app.models.screening import Screening, Subject

__all__ = [
    "ApiClient",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditTreeNode",
    "AuditVerificationState",
    "AuditWitnessCursor",
    "Base",
    "ConsoleSession",
    "Decision",
    "Delivery",
    "DeliveryAttempt",
    "PartnerCircuit",
    "PartnerRow",
    "Referral",
    "ReferralEvent",
    "Role",
    "Screening",
    "Subject",
]
