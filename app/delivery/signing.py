"""Standard Webhooks signatures, through the ``standardwebhooks`` library (the reference
implementation of the spec, so partners can verify with any of its ports)."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks.webhooks import Webhook


def headers(
    *, webhook_id: str, body: bytes, secrets: list[str], timestamp: datetime
) -> dict[str, str]:
    """The three Standard Webhooks headers; one ``v1,`` signature per active secret, so a
    partner rotating its secret verifies with either during the overlap."""
    payload = body.decode()
    signatures = [Webhook(secret).sign(webhook_id, timestamp, payload) for secret in secrets]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": "Ruta-Webhooks/1",
    }
