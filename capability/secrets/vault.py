"""The vault: how secret values are encrypted at rest and read back for the engine.

Values are Fernet tokens (AES-128-CBC with an HMAC-SHA256, from ``cryptography``) under
the keys of ``SECRETS_KEY``: the first key encrypts, every key decrypts, so a new key
put first takes over while older tokens still read (``service.rotate`` re-encrypts
them all). Without ``SECRETS_KEY`` one key is derived from ``SECRET_KEY``
(HKDF-SHA256). Below the services: the engine reads a run's secrets through
``values_for`` (``capability.engine.masking``), never through the service layer.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import select

from app.extensions import DbSession
from capability.models import Secret


class SecretsKeyError(RuntimeError):
    """``SECRETS_KEY`` is not a list of Fernet keys, or a stored value does not decrypt
    with any of them (the key it was saved under is gone)."""


def derived_key(secret_key: str) -> bytes:
    """The Fernet key used when ``SECRETS_KEY`` is empty."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"apg workflow secrets v1").derive(secret_key.encode("utf-8"))
    return base64.urlsafe_b64encode(raw)


@lru_cache(maxsize=8)
def cipher(secrets_key: str, secret_key: str) -> Any:
    """The ``MultiFernet`` of these keys (built once: deriving a key is not free)."""
    from cryptography.fernet import Fernet, MultiFernet

    listed = [k.strip() for k in secrets_key.split(",") if k.strip()]
    try:
        keys = [Fernet(k) for k in listed] or [Fernet(derived_key(secret_key))]
    except (ValueError, TypeError) as exc:
        raise SecretsKeyError(
            "SECRETS_KEY must be comma-separated Fernet keys (32 url-safe base64-encoded "
            "bytes each, e.g. from `python -c \"from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())\"`)") from exc
    return MultiFernet(keys)


def encrypt(secrets_key: str, secret_key: str, value: str) -> str:
    return str(cipher(secrets_key, secret_key).encrypt(value.encode("utf-8")).decode("ascii"))


def decrypt(secrets_key: str, secret_key: str, token: str) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return str(cipher(secrets_key, secret_key).decrypt(token.encode("ascii")).decode("utf-8"))
    except InvalidToken as exc:
        raise SecretsKeyError("a secret does not decrypt with any key of SECRETS_KEY "
                              "(was it saved under a key that is gone?)") from exc


def values_for(session: DbSession, secrets_key: str, secret_key: str, team_id: str,
               names: Iterable[str] | None) -> dict[str, str]:
    """The values of the team's secrets among ``names`` (``None``: all of them), for
    the engine: a name the team has no secret of is left out, and the expression
    reading it fails."""
    query = select(Secret.name, Secret.ciphertext).where(Secret.team_id == team_id)
    if names is not None:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        query = query.where(Secret.name.in_(wanted))
    return {name: decrypt(secrets_key, secret_key, token)
            for name, token in session.execute(query).all()}
