"""Workflow secrets: a team's named values, read by its workflows as
``{{ secrets.<name> }}`` (DSL.md), encrypted at rest and never shown after saving.

Values are Fernet tokens (AES-128-CBC with an HMAC-SHA256, from ``cryptography``) under
the keys of ``SECRETS_KEY``: the first key encrypts, every key decrypts, so a new key
put first takes over while older tokens still read (``rotate`` re-encrypts them all).
Without ``SECRETS_KEY`` one key is derived from ``SECRET_KEY`` (HKDF-SHA256).

Managing secrets is the Admin's (API.md, roles); the engine reads values with
``values_for`` for the run's own team, and masks them in everything it stores
(``capability.engine.masking``). Every function that changes a secret takes the acting
user; the audit trail records the change without the value (``blueprint``).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterable
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit.context import acting_as
from app.audit.recorder import update_action
from app.errors import Conflict, Forbidden, NotFound
from app.extensions import DbSession
from app.models import Team
from app.security.actor import Actor
from capability.models import Secret
from capability.service import iso, team_by_name

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_VALUE = 65536  # characters
# A team as ``name`` or ``tenant/name`` (64 characters each, capability.service).
MAX_TEAM = 129


def _name(value: str) -> str:
    if not NAME.match(value):
        raise PydanticCustomError(
            "secret_name", "must start with a lower-case letter, then lower-case letters, "
            "digits or _ (at most 63 characters), as templates name it: secrets.<name>")
    return value


# Bodies never echo what they were sent (hide_input_in_errors): the value is a secret.
class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    team: str = Field(min_length=1, max_length=MAX_TEAM)
    name: Annotated[str, AfterValidator(_name)]
    value: str = Field(min_length=1, max_length=MAX_VALUE)


class SecretValueIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    value: str = Field(min_length=1, max_length=MAX_VALUE)


class SecretsKeyError(RuntimeError):
    """``SECRETS_KEY`` is not a list of Fernet keys, or a stored value does not decrypt
    with any of them (the key it was saved under is gone)."""


def derived_key(secret_key: str) -> bytes:
    """The Fernet key used when ``SECRETS_KEY`` is empty."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"apg workflow secrets v1").derive(secret_key.encode("utf-8"))
    return base64.urlsafe_b64encode(raw)


def cipher(config: Any) -> MultiFernet:
    """The keys of ``config`` (a Flask config or any mapping)."""
    listed = [k.strip() for k in str(config.get("SECRETS_KEY") or "").split(",") if k.strip()]
    try:
        keys = [Fernet(k) for k in listed] or [Fernet(derived_key(config["SECRET_KEY"]))]
    except (ValueError, TypeError) as exc:
        raise SecretsKeyError(
            "SECRETS_KEY must be comma-separated Fernet keys (32 url-safe base64-encoded "
            "bytes each, e.g. from `python -c \"from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())\"`)") from exc
    return MultiFernet(keys)


def encrypt(config: Any, value: str) -> str:
    return cipher(config).encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(config: Any, token: str) -> str:
    try:
        return cipher(config).decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretsKeyError("a secret does not decrypt with any key of SECRETS_KEY "
                              "(was it saved under a key that is gone?)") from exc


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("Only an Admin may manage secrets")


def get_secret(session: DbSession, actor: Actor, secret_id: str) -> Secret:
    _require_admin(actor)
    secret = session.get(Secret, secret_id)
    if secret is None:
        raise NotFound(f"secret {secret_id} not found")
    return secret


def _duplicate(team: Team, name: str) -> Conflict:
    return Conflict(f"Team {team.name!r} has a secret named {name!r} already",
                    [{"path": "name", "message": "already exists in this team"}])


def create_secret(session: DbSession, actor: Actor, config: Any, data: SecretIn) -> Secret:
    """A new secret of the team named ``data.team`` (``name`` or ``tenant/name``)."""
    _require_admin(actor)
    team = team_by_name(session, actor, data.team)
    taken = select(Secret.id).where(Secret.team_id == team.id, Secret.name == data.name)
    if session.execute(taken).first() is not None:
        raise _duplicate(team, data.name)
    with acting_as(actor):
        secret = Secret(team=team, name=data.name, ciphertext=encrypt(config, data.value),
                        created_by=actor.username, updated_by=actor.username)
        session.add(secret)
        try:
            session.commit()
        except IntegrityError as exc:  # a concurrent save took the name
            session.rollback()
            raise _duplicate(team, data.name) from exc
    return secret


def update_secret(session: DbSession, actor: Actor, config: Any, secret_id: str,
                  data: SecretValueIn) -> Secret:
    """A new value (the name and team of a secret do not change: workflows name it)."""
    secret = get_secret(session, actor, secret_id)
    with acting_as(actor):
        secret.ciphertext = encrypt(config, data.value)
        secret.updated_by = actor.username
        secret.updated_at = dt.datetime.now(dt.UTC)
        session.commit()
    return secret


def delete_secret(session: DbSession, actor: Actor, secret_id: str) -> None:
    secret = get_secret(session, actor, secret_id)
    with acting_as(actor):
        session.delete(secret)
        session.commit()


def secret_dict(secret: Secret) -> dict[str, Any]:
    """A secret as the API shows it: never its value, nor the ciphertext."""
    return {
        "id": secret.id,
        "team": secret.team.name,
        "name": secret.name,
        "created_by": secret.created_by,
        "updated_by": secret.updated_by,
        "created_at": iso(secret.created_at),
        "updated_at": iso(secret.updated_at),
    }


def values_for(session: Any, config: Any, team_id: str,
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
    return {name: decrypt(config, token) for name, token in session.execute(query).all()}


def rotate(session: Any, config: Any) -> int:
    """Re-encrypt every secret under the first key of ``SECRETS_KEY``; how many."""
    keys = cipher(config)
    secrets = list(session.execute(select(Secret)).scalars())
    # The audit trail records a `rotate` of each secret (the values do not change).
    with update_action("rotate"):
        for secret in secrets:
            try:
                token = keys.rotate(secret.ciphertext.encode("ascii"))
            except InvalidToken as exc:
                which = f"secret {secret.name!r} of team {secret.team.name!r}"
                session.rollback()
                raise SecretsKeyError(f"{which} does not decrypt with any key of SECRETS_KEY "
                                      "(was it saved under a key that is gone?); nothing "
                                      "was re-encrypted") from exc
            secret.ciphertext = token.decode("ascii")
        session.commit()
    return len(secrets)
