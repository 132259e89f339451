"""Signing a webhook delivery as each sender does (GitHub, Stripe, Slack, Standard
Webhooks, a plain HMAC): what a test, or a user's script, sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def _hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(scheme: str, secret: str, body: bytes, at: int | None = None,
         delivery: str = "d-1") -> dict[str, str]:
    """The headers a sender of ``scheme`` adds to ``body``."""
    ts = str(int(time.time()) if at is None else at)
    key = secret.encode()
    if scheme == "github":
        return {"X-Hub-Signature-256": "sha256=" + _hex(key, body),
                "X-GitHub-Delivery": delivery, "X-GitHub-Event": "push"}
    if scheme == "stripe":
        return {"Stripe-Signature": f"t={ts},v1={_hex(key, ts.encode() + b'.' + body)}"}
    if scheme == "slack":
        return {"X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": "v0=" + _hex(key, b"v0:" + ts.encode() + b":" + body)}
    if scheme == "standard-webhooks":
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        mac = hmac.new(raw, f"{delivery}.{ts}.".encode() + body, hashlib.sha256).digest()
        return {"webhook-id": delivery, "webhook-timestamp": ts,
                "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    if scheme == "hmac-sha256":
        return {"X-Signature": _hex(key, body)}
    return {}
