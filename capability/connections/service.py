"""Connections (CONNECTORS.md, "Connections"): a team's saved way into an outside
system, named by tasks (``with.connection``).

An Author of the team creates, changes, deletes and tests them; its Operators and
Viewers see names, types and the non-secret ``config``; another team's is 404; Admin
may do everything. ``config`` is checked against the type's model (422 with paths);
the secret fields are encrypted at once with the secrets' key ring (``secrets.vault``,
the same rotation command) and never shown again: they read back as ``"***"``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from cryptography.fernet import InvalidToken
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit.context import acting_as
from app.audit.recorder import update_action
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed, error_path
from app.extensions import DbSession
from app.security.actor import Actor
from app.security.roles import AUTHOR
from app.security.scope import scoped
from app.times import iso, utcnow
from capability.connections import resolve
from capability.connections.models import Connection
from capability.connectors import breaker, registry
from capability.connectors.sdk import ConnectionType, ConnectorError
from capability.egress import EgressRefused
from capability.engine.settings import EngineSettings
from capability.secrets.vault import SecretsKeyError, cipher, encrypt
from capability.service import team_by_name

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MASK = "***"
TEST_TIMEOUT = 15.0  # seconds a "Test connection" round trip may take


class ConnectionIn(BaseModel):
    """The body of ``POST /api/v1/connections/``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    team: str = Field(min_length=1, max_length=129)
    name: str = Field(min_length=1, max_length=63)
    type: str = Field(min_length=1, max_length=63)
    config: dict[str, Any] = Field(default_factory=dict)
    secret: dict[str, Any] = Field(default_factory=dict)
    description: str = Field(default="", max_length=1024)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("lower-case letters, digits, '_' or '-' (at most 63), starting "
                             "with a letter: tasks name it as with.connection")
        return value


class ConnectionUpdate(BaseModel):
    """The body of ``PUT /api/v1/connections/<id>``: the whole config; the secret fields
    given replace theirs, those left out keep their values (they cannot be read back to
    be sent again). Team, name and type do not change: tasks name the connection."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    config: dict[str, Any] = Field(default_factory=dict)
    secret: dict[str, Any] = Field(default_factory=dict)
    description: str = Field(default="", max_length=1024)


def may_manage(actor: Actor, team_id: str) -> bool:
    """Authors of the team (and Admin) create, change, delete and test its connections:
    the rule the service enforces and the pages read."""
    return actor.is_admin or (AUTHOR in actor.roles and team_id in actor.team_ids)


def _require(actor: Actor, team_id: str, what: str) -> None:
    if not may_manage(actor, team_id):
        raise Forbidden(f"Only an {AUTHOR} of the connection's team may {what}")


def kind_of(name: str) -> ConnectionType:
    found = registry.connection_types().get(name)
    if found is None:
        known = ", ".join(sorted(registry.connection_types())) or "none"
        raise ValidationFailed("Invalid connection", [
            {"path": "type", "message": f"unknown connection type {name!r} (known: {known})"}])
    return found


def _checked(kind: ConnectionType, config: dict[str, Any],
             secret: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Config and secret validated by the type's models: every error with its path,
    never an echo of a secret value."""
    errors: list[dict[str, str]] = []
    out: list[dict[str, Any]] = []
    for where, model, data in (("config", kind.Config, config), ("secret", kind.Secret, secret)):
        if model is None:
            if data:
                errors.append({"path": where, "message": f"a {kind.type} connection has no "
                                                         "secret fields"})
            out.append({})
            continue
        try:
            out.append(model.model_validate(data).model_dump(mode="json", exclude_none=True,
                                                             by_alias=True))
        except ValidationError as exc:
            for err in exc.errors(include_input=False):
                message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
                errors.append({"path": error_path((where, *err["loc"])), "message": message})
    if errors:
        raise ValidationFailed("Invalid connection", errors)
    return out[0], out[1]


def _seal(settings: EngineSettings, secret: dict[str, Any]) -> str | None:
    values = {k: v for k, v in secret.items() if v not in (None, "")}
    if not values:
        return None
    return encrypt(settings.secrets_key, settings.secret_key, json.dumps(values))


def create_connection(session: DbSession, actor: Actor, settings: EngineSettings,
                      data: ConnectionIn) -> Connection:
    team = team_by_name(session, actor, data.team)
    _require(actor, team.id, "create connections")
    kind = kind_of(data.type)
    config, secret = _checked(kind, data.config, data.secret)
    taken = select(Connection.id).where(Connection.team_id == team.id,
                                        Connection.name == data.name)
    if session.execute(taken).first() is not None:
        raise _duplicate(team.name, data.name)
    with acting_as(actor):
        connection = Connection(team=team, name=data.name, type=kind.type, config=config,
                                secret_fields=sorted(k for k, v in secret.items() if v),
                                ciphertext=_seal(settings, secret),
                                description=data.description, created_by=actor.username,
                                updated_by=actor.username)
        session.add(connection)
        try:
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise _duplicate(team.name, data.name) from exc
    resolve.bump()
    return connection


def _duplicate(team: str, name: str) -> Conflict:
    return Conflict(f"Team {team!r} has a connection named {name!r} already",
                    [{"path": "name", "message": "already exists in this team"}])


def get_connection(session: DbSession, actor: Actor, connection_id: str) -> Connection:
    found = session.execute(scoped(select(Connection), Connection, actor)
                            .where(Connection.id == connection_id)).scalar()
    if found is None:
        raise NotFound(f"connection {connection_id} not found")
    return found


def list_connections(session: DbSession, actor: Actor) -> list[Connection]:
    query = scoped(select(Connection), Connection, actor).order_by(Connection.name)
    return list(session.execute(query).scalars().unique())


def update_connection(session: DbSession, actor: Actor, settings: EngineSettings,
                      connection_id: str, data: ConnectionUpdate) -> Connection:
    connection = get_connection(session, actor, connection_id)
    _require(actor, connection.team_id, "change connections")
    kind = kind_of(connection.type)
    old = resolve.secret_fields(connection.ciphertext, settings)
    config, secret = _checked(kind, data.config, {**old, **data.secret})
    with acting_as(actor):
        connection.config, connection.description = config, data.description
        connection.secret_fields = sorted(k for k, v in secret.items() if v)
        connection.ciphertext = _seal(settings, secret)
        connection.updated_by, connection.updated_at = actor.username, utcnow()
        session.commit()
    resolve.bump()
    return connection


def delete_connection(session: DbSession, actor: Actor, connection_id: str) -> None:
    connection = get_connection(session, actor, connection_id)
    _require(actor, connection.team_id, "delete connections")
    with acting_as(actor):
        session.delete(connection)
        session.commit()
    resolve.bump()


def test_connection(session: DbSession, actor: Actor, settings: EngineSettings,
                    connection_id: str) -> dict[str, Any]:
    """A real round trip (connect and a cheap no-op): ``{ok, message, took_ms}``, the
    message the service's own, the connection's secrets masked in it."""
    connection = get_connection(session, actor, connection_id)
    _require(actor, connection.team_id, "test connections")
    kind = kind_of(connection.type)
    found = resolve.fields_of(connection.id, connection.name, connection.type,
                              dict(connection.config),
                              resolve.secret_fields(connection.ciphertext, settings))
    session.rollback()  # no transaction held while the outside system answers
    context = registry.context_for(None, settings, None, found.fields, found.secrets,
                                   timeout=TEST_TIMEOUT)
    started = time.monotonic()
    try:
        ok, message = True, kind.test(context)
    except ConnectorError as exc:
        ok, message = False, exc.message
    except EgressRefused as exc:
        ok, message = False, str(exc)
    except Exception as exc:  # a type's test that did not class its error
        ok, message = False, f"{type(exc).__name__}: {exc}"
    took = round((time.monotonic() - started) * 1000)
    from capability import dsl

    return {"ok": ok, "message": dsl.mask_text(message, found.secrets) if found.secrets
            else message, "took_ms": took}


def shown(redis: Any, found: list[Connection]) -> list[dict[str, Any]]:
    """Connections as the API shows them, each with its breaker (read from Redis)."""
    return [connection_dict(c, breaker.state(redis, c.id)) for c in found]


def connection_dict(connection: Connection,
                    breaker_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """A connection as the API shows it to anyone who may see it: the secret fields by
    name, each ``"***"``; ``breaker``: ``{state, failures, open_until}``."""
    return {
        "id": connection.id, "team": connection.team.name, "name": connection.name,
        "type": connection.type, "description": connection.description,
        "config": connection.config,
        "secret": dict.fromkeys(connection.secret_fields or [], MASK),
        "created_by": connection.created_by, "updated_by": connection.updated_by,
        "created_at": iso(connection.created_at), "updated_at": iso(connection.updated_at),
        **({"breaker": breaker_state} if breaker_state is not None else {}),
    }


def types() -> list[dict[str, Any]]:
    """Each connection type with the JSON Schema of its config and secret fields (the
    connection forms are made from them)."""
    return [{"type": name, "description": kind.description,
             "config": kind.Config.model_json_schema(),
             "secret": kind.Secret.model_json_schema() if kind.Secret else None}
            for name, kind in sorted(registry.connection_types().items())]


def rotate(session: DbSession, settings: EngineSettings) -> int:
    """Re-encrypt every connection's secret fields under the first key of SECRETS_KEY
    (``flask --app app secrets rotate``); how many."""
    keys = cipher(settings.secrets_key, settings.secret_key)
    rows = [c for c in session.execute(select(Connection)).scalars() if c.ciphertext]
    with update_action("rotate"):
        for connection in rows:
            try:
                token = keys.rotate(str(connection.ciphertext).encode("ascii"))
            except InvalidToken as exc:
                which = f"connection {connection.name!r} of team {connection.team.name!r}"
                session.rollback()
                raise SecretsKeyError(f"{which} does not decrypt with any key of SECRETS_KEY "
                                      "(was it saved under a key that is gone?); nothing "
                                      "was re-encrypted") from exc
            connection.ciphertext = token.decode("ascii")
        session.commit()
    return len(rows)
