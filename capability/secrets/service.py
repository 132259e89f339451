"""Workflow secrets: a team's named values, read by its workflows as
``{{ secrets.<name> }}`` (DSL.md), encrypted at rest (``vault``) and never shown after
saving.

Authors manage the secrets of their own teams (list names, create, replace, delete;
never read back); Operators and Viewers of a team see its secrets' names only; another
team's secret is not found (404); Admin may do everything (AGENTS.md, "Team secrets").
The engine reads values through
``vault.values_for`` for the run's own team, and masks them in everything it stores
(``capability.engine.masking``). Every function that changes a secret takes the acting
user; the audit trail records the change without the value (``blueprint``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from cryptography.fernet import InvalidToken
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit.context import acting_as
from app.audit.recorder import update_action
from app.errors import Conflict, Forbidden
from app.extensions import DbSession
from app.models import Team
from app.security.actor import Actor
from app.security.roles import AUTHOR
from app.security.scope import get_scoped
from app.times import iso, utcnow
from capability.models import Secret
from capability.secrets.vault import SecretsKeyError, cipher, encrypt
from capability.service import team_by_name

__all__ = ["SecretIn", "SecretValueIn", "SecretsKeyError", "create_secret", "delete_secret",
           "get_secret", "may_manage", "rotate", "secret_dict", "update_secret"]

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


def _encrypt(config: Any, value: str) -> str:
    return encrypt(str(config.get("SECRETS_KEY") or ""), config["SECRET_KEY"], value)


def may_manage(actor: Actor, team_id: str) -> bool:
    """Authors of the team (and Admin) create, replace and delete its secrets: the rule
    the service enforces and the pages read (which buttons to show)."""
    return actor.is_admin or (AUTHOR in actor.roles and team_id in actor.team_ids)


def _require_manage(actor: Actor, team_id: str) -> None:
    if not may_manage(actor, team_id):
        raise Forbidden(f"Only an {AUTHOR} of the secret's team may manage its secrets")


def get_secret(session: DbSession, actor: Actor, secret_id: str) -> Secret:
    """A secret of one of the actor's teams (its name, never its value); another team's
    is not found, so its existence is not revealed."""
    return get_scoped(session, Secret, secret_id, actor)


def _duplicate(team: Team, name: str) -> Conflict:
    return Conflict(f"Team {team.name!r} has a secret named {name!r} already",
                    [{"path": "name", "message": "already exists in this team"}])


def create_secret(session: DbSession, actor: Actor, config: Any, data: SecretIn) -> Secret:
    """A new secret of the team named ``data.team`` (``name`` or ``tenant/name``)."""
    team = team_by_name(session, actor, data.team)
    _require_manage(actor, team.id)
    taken = select(Secret.id).where(Secret.team_id == team.id, Secret.name == data.name)
    if session.execute(taken).first() is not None:
        raise _duplicate(team, data.name)
    with acting_as(actor):
        secret = Secret(team=team, name=data.name, ciphertext=_encrypt(config, data.value),
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
    _require_manage(actor, secret.team_id)
    with acting_as(actor):
        secret.ciphertext = _encrypt(config, data.value)
        secret.updated_by = actor.username
        secret.updated_at = utcnow()
        session.commit()
    return secret


def delete_secret(session: DbSession, actor: Actor, secret_id: str) -> None:
    secret = get_secret(session, actor, secret_id)
    _require_manage(actor, secret.team_id)
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


def rotate(session: DbSession, config: Any) -> int:
    """Re-encrypt every secret under the first key of ``SECRETS_KEY``; how many."""
    keys = cipher(str(config.get("SECRETS_KEY") or ""), config["SECRET_KEY"])
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
