"""Pieces the built-in connection types share: a password-only secret, and the check of
a service URL (its scheme, a host, and no password written into it)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field


class PasswordSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(default="", max_length=4096)


def service_url(value: str, schemes: tuple[str, ...]) -> str:
    """``value`` when it is a URL of one of ``schemes`` with a host and no password
    (the password goes in the secret fields, where it is encrypted and masked)."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(" or ".join(f"a {s}://" for s in schemes) + " URL with a host")
    if parts.password:
        raise ValueError("put the password in the secret field, not in the URL")
    return value
