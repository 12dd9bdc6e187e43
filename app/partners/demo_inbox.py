"""The demo partners' inbox: the service receives its own demo deliveries (development only).

It behaves like a well-built partner: it verifies the Standard Webhooks signature with the
``standardwebhooks`` library against the partner's secrets, deduplicates on
``webhook-id``, and keeps the last deliveries in memory so a newcomer can see what a
partner received. It is mounted only with ``RUTA_ENV=development`` and logs no payload.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

log = structlog.get_logger("ruta.demo_inbox")

INBOX_LIMIT = 200


class SignatureInvalid(Exception):
    """The delivery did not verify under any of the partner's secrets."""


def verify_delivery(secrets: list[str], body: bytes, headers: dict[str, str]) -> Any:
    """Verify with each current secret (rotation overlap); return the parsed JSON body."""
    for secret in secrets:
        try:
            return Webhook(secret).verify(body, headers)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            continue
    raise SignatureInvalid


@dataclass
class DemoInbox:
    """The last ``limit`` deliveries across all demo partners, newest last."""

    limit: int = INBOX_LIMIT
    _items: deque[dict[str, Any]] = field(init=False)
    _seen: deque[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self._items = deque(maxlen=self.limit)
        self._seen = deque(maxlen=self.limit * 5)

    def receive(
        self, partner_id: str, webhook_id: str, payload: Any, received_at: datetime
    ) -> bool:
        """Store a verified delivery; False when it is a duplicate ``webhook-id``."""
        key = (partner_id, webhook_id)
        if key in self._seen:
            log.info("demo_delivery_duplicate", partner_id=partner_id, webhook_id=webhook_id)
            return False
        self._seen.append(key)
        self._items.append(
            {
                "partner_id": partner_id,
                "webhook_id": webhook_id,
                "received_at": received_at.isoformat(),
                "payload": payload,
            }
        )
        log.info("demo_delivery_received", partner_id=partner_id, webhook_id=webhook_id)
        return True

    def for_partner(self, partner_id: str) -> list[dict[str, Any]]:
        return [item for item in self._items if item["partner_id"] == partner_id]


def parse_body(body: bytes) -> Any:
    return json.loads(body)
