"""The connection a task names, read for one attempt (CONNECTORS.md, "Using a connection
in a task"): a connection of the run's own team, or none at all: another team's name
is as unknown as a name no team has."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from app.extensions import db
from capability.connections.models import Connection
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext
from capability.models import Run
from capability.secrets import vault


@dataclass(frozen=True)
class Resolved:
    id: str
    name: str
    type: str
    fields: dict[str, Any]  # config and secret fields together, ``type`` too
    secrets: list[str]  # the secret values: masked in whatever the attempt leaves behind


def secret_fields(ciphertext: str | None, settings: EngineSettings) -> dict[str, Any]:
    if not ciphertext:
        return {}
    value = json.loads(vault.decrypt(settings.secrets_key, settings.secret_key, ciphertext))
    return value if isinstance(value, dict) else {}


def masks_of(secret: dict[str, Any]) -> list[str]:
    """What to mask of the secret fields: each value, and of a URL (a Slack or Teams
    webhook) also its path and query, the part that is the credential, which a peer
    echoing the request path would show without the host."""
    out: list[str] = []
    for value in secret.values():
        if not isinstance(value, str) or not value:
            continue
        out.append(value)
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.netloc:
            tail = parts.path + (f"?{parts.query}" if parts.query else "")
            if len(tail) >= 8:
                out.append(tail)
    return out


def fields_of(connection_id: str, name: str, kind: str, config: dict[str, Any],
              secret: dict[str, Any]) -> Resolved:
    return Resolved(connection_id, name, kind, {**config, **secret, "type": kind},
                    masks_of(secret))


def for_attempt(ctx: AttemptContext, name: str, settings: EngineSettings) -> Resolved | None:
    """The connection ``name`` an attempt may use: of its run's team, or for a step
    tested without a run (``engine.steptest``), of the team it was tested for."""
    if ctx.team_id is not None:
        return for_team(ctx.team_id, name, settings)
    return for_run(ctx.run_id, name, settings)


_COLUMNS = (Connection.id, Connection.name, Connection.type, Connection.config,
            Connection.ciphertext)


def for_team(team_id: str, name: str, settings: EngineSettings) -> Resolved | None:
    return _read(select(*_COLUMNS).where(Connection.team_id == team_id,
                                         Connection.name == name), settings)


def for_run(run_id: str, name: str, settings: EngineSettings) -> Resolved | None:
    """The connection ``name`` of the run's team, decrypted; None when it has none."""
    return _read(select(*_COLUMNS).join(Run, Run.team_id == Connection.team_id)
                 .where(Run.id == run_id, Connection.name == name), settings)


def _read(query: Any, settings: EngineSettings) -> Resolved | None:
    """Read on a connection of its own: the attempt's session is the engine's."""
    with db.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return fields_of(row.id, row.name, row.type, dict(row.config or {}),
                     secret_fields(row.ciphertext, settings))
