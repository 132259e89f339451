"""Webhook signature schemes of TRIGGERS.md, verified in constant time.

``verify`` returns None when the delivery is authentic, else the reason (for the
delivery log: never the expected or received signature). Timestamps are checked
against ``now`` within ``tolerance`` both ways (a replay from the past, a clock far in
the future). Each scheme's delivery id (for de-duplication) is ``delivery_id``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

SCHEMES = ("none", "hmac-sha256", "github", "stripe", "slack", "standard-webhooks")
DEFAULT_HEADER = "X-Signature"  # hmac-sha256, unless the webhook names another


@dataclass(frozen=True)
class Scheme:
    name: str
    secret: str = ""
    tolerance: dt.timedelta = dt.timedelta(minutes=5)
    header: str = DEFAULT_HEADER
    prefix: str = ""
    encoding: str = "hex"  # hmac-sha256: hex or base64


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _same(expected: str, received: str) -> bool:
    return hmac.compare_digest(expected.encode(), received.encode())


def _fresh(timestamp: str, now: dt.datetime, tolerance: dt.timedelta) -> str | None:
    try:
        at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (ValueError, OverflowError, OSError):
        return "the signature's timestamp is not a Unix time"
    if abs(now - at) > tolerance:
        return (f"the signature's timestamp is {int(abs((now - at).total_seconds()))} s "
                f"from now, outside the tolerance of {int(tolerance.total_seconds())} s")
    return None


def verify(scheme: Scheme, headers: Mapping[str, str], body: bytes,
           now: dt.datetime) -> str | None:
    """None when authentic; else why not. ``headers``: lower-case names."""
    if scheme.name == "none":
        return None
    key = scheme.secret.encode()
    if scheme.name == "hmac-sha256":
        return _plain(scheme, headers, body)
    if scheme.name == "github":
        got = headers.get("x-hub-signature-256")
        if not got:
            return "missing X-Hub-Signature-256"
        return None if _same("sha256=" + _mac(key, body).hex(), got) else "bad signature"
    if scheme.name == "stripe":
        return _stripe(key, headers, body, now, scheme.tolerance)
    if scheme.name == "slack":
        signature, ts = headers.get("x-slack-signature"), headers.get("x-slack-request-timestamp")
        if not signature or not ts:
            return "missing X-Slack-Signature or X-Slack-Request-Timestamp"
        stale = _fresh(ts, now, scheme.tolerance)
        if stale:
            return stale
        expected = "v0=" + _mac(key, b"v0:" + ts.encode() + b":" + body).hex()
        return None if _same(expected, signature) else "bad signature"
    if scheme.name == "standard-webhooks":
        return _standard(scheme.secret, headers, body, now, scheme.tolerance)
    return f"unknown signature scheme {scheme.name!r}"


def _plain(scheme: Scheme, headers: Mapping[str, str], body: bytes) -> str | None:
    got = headers.get(scheme.header.lower())
    if not got:
        return f"missing {scheme.header}"
    if scheme.prefix:
        if not got.startswith(scheme.prefix):
            return f"{scheme.header} does not start with {scheme.prefix!r}"
        got = got[len(scheme.prefix):]
    mac = _mac(scheme.secret.encode(), body)
    expected = base64.b64encode(mac).decode() if scheme.encoding == "base64" else mac.hex()
    return None if _same(expected, got.strip()) else "bad signature"


def _stripe(key: bytes, headers: Mapping[str, str], body: bytes, now: dt.datetime,
            tolerance: dt.timedelta) -> str | None:
    header = headers.get("stripe-signature")
    if not header:
        return "missing Stripe-Signature"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    ts = (parts.get("t") or [""])[0]
    if not ts or not parts.get("v1"):
        return "Stripe-Signature has no t= or no v1="
    stale = _fresh(ts, now, tolerance)
    if stale:
        return stale
    expected = _mac(key, ts.encode() + b"." + body).hex()
    return None if any(_same(expected, v) for v in parts["v1"]) else "bad signature"


def _standard(secret: str, headers: Mapping[str, str], body: bytes, now: dt.datetime,
              tolerance: dt.timedelta) -> str | None:
    msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not ts or not signatures:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    stale = _fresh(ts, now, tolerance)
    if stale:
        return stale
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return "the webhook's secret is not a whsec_ base64 key"
    expected = base64.b64encode(_mac(key, f"{msg_id}.{ts}.".encode() + body)).decode()
    offered = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
    return None if any(_same(expected, s) for s in offered) else "bad signature"


def delivery_id(scheme: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The id the sender gives this delivery (a replay carries the same), if any."""
    found: str | None = None
    if scheme == "github":
        found = headers.get("x-github-delivery")
    elif scheme == "stripe":
        try:
            event = json.loads(body)
            found = str(event["id"]) if isinstance(event, dict) and event.get("id") else None
        except (ValueError, UnicodeDecodeError):
            found = None
    elif scheme == "standard-webhooks":
        found = headers.get("webhook-id")
    elif scheme == "slack" and headers.get("x-slack-request-timestamp"):
        found = (headers["x-slack-request-timestamp"] + ":"
                 + headers.get("x-slack-signature", ""))
    found = found or headers.get("idempotency-key")
    return found[:255] if found else None
