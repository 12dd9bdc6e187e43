"""Fuzzing the signing and verification paths: every signed body verifies with
standardwebhooks, and any change to the body, id or timestamp fails."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.delivery import signing

SECRETS = st.binary(min_size=24, max_size=64).map(
    lambda raw: "whsec_" + base64.b64encode(raw).decode()
)
BODIES = st.text(max_size=300).map(lambda t: json.dumps({"x": t}).encode())


def _verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except (WebhookVerificationError, UnicodeDecodeError, ValueError):
        # A tampered body may not even decode: the library refuses it either way.
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(SECRETS, SECRETS, BODIES, st.integers(min_value=0), st.data())
def test_signatures_verify_and_any_change_fails(
    secret: str, other: str, body: bytes, flip: int, data: st.DataObject
) -> None:
    now = datetime.now(UTC)
    headers = signing.headers(
        webhook_id="msg_" + "a" * 32, body=body, secrets=[secret, other], timestamp=now
    )
    assert _verify(secret, body, headers)
    assert _verify(other, body, headers)  # both secrets sign during a rotation
    if body:
        tampered = bytearray(body)
        tampered[flip % len(tampered)] ^= 1 << data.draw(st.integers(0, 7))
        assert not _verify(secret, bytes(tampered), headers)
    assert not _verify(secret, body, {**headers, "webhook-id": "msg_" + "b" * 32})
    stale = {**headers, "webhook-timestamp": str(int((now - timedelta(hours=1)).timestamp()))}
    assert not _verify(secret, body, stale)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
        st.text(max_size=80),
    ),
    BODIES,
    SECRETS,
)
def test_garbage_headers_never_verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    assert not _verify(secret, body, headers)
