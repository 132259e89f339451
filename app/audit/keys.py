"""``AUDIT_KEY``: the HMAC key of the audit chain, never stored in the database.

Outside development it must be set (``check``, called at start). In development an
empty ``AUDIT_KEY`` is derived from ``SECRET_KEY`` (HKDF-SHA256, as the secrets vault
derives its key), so `make run` works without one. The key must not change afterwards:
events written under another key no longer verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

MIN_LENGTH = 32


@lru_cache(maxsize=8)
def _derive(secret_key: str) -> bytes:
    # HKDF-SHA256 (RFC 5869, no salt, one block) spelled with the standard library:
    # the same bytes as cryptography's HKDF, without loading OpenSSL's bindings into a
    # scheduler that only needs this key (about 8 MB of its memory).
    prk = hmac.new(b"\0" * 32, secret_key.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(prk, b"apg audit chain v1" + b"\x01", hashlib.sha256).digest()


def audit_key(config: Mapping[str, Any]) -> bytes:
    """The key the chain's MACs are computed with."""
    configured = str(config.get("AUDIT_KEY") or "")
    if configured:
        return configured.encode("utf-8")
    return _derive(str(config["SECRET_KEY"]))


def current() -> bytes:
    """``audit_key`` of the application in context."""
    from flask import current_app

    return audit_key(current_app.config)


def check(config: Mapping[str, Any]) -> str | None:
    """Why the configuration cannot run (a message), or None."""
    configured = str(config.get("AUDIT_KEY") or "")
    if configured and len(configured) < MIN_LENGTH:
        return f"AUDIT_KEY must be at least {MIN_LENGTH} characters long"
    if not configured and config.get("APG_ENV", "development") != "development":
        return ("AUDIT_KEY is not set: set it (32+ random characters, kept out of the "
                "database and backed up) or APG_ENV=development")
    return None
