"""The connection a task names, read for one attempt (CONNECTORS.md, "Using a connection
in a task"): a connection of the run's own team, or none at all: another team's name
is as unknown as a name no team has.

A worker keeps what it read (decrypted, keyed by team and name) while the connections'
generation in Redis stays the same: every change through the service bumps it
(``bump``), and so does every change of a connection's breaker (``breaker.record``),
so the next attempt anywhere reads the connection (and its breaker) again; an entry is also
read again after ``CACHE_SECONDS``, for a change made around the service (SQL by hand).
A lookup is then one Redis GET, not a pooled database connection, a query and a
decryption."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, has_app_context
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select

from app.extensions import db
from app.runtime.redis_conn import get_redis
from capability.connections.models import Connection
from capability.connectors import breaker
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
    # The connections' generation this was read under, while it is still the current one
    # (``for_team``): the breaker keeps its reading under it too (``breaker.admit``).
    generation: int | None = None


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


# Built once: building it per lookup cost more than a cache hit (every task but the first).
_OF_TEAM = select(*_COLUMNS).where(Connection.team_id == bindparam("team"),
                                   Connection.name == bindparam("name"))

GENERATION = breaker.GENERATION
CACHE_SECONDS = 30.0
CACHE_SIZE = 1024
_cache: OrderedDict[tuple[str, str], tuple[int, float, Resolved | None]] = OrderedDict()
_cache_lock = threading.Lock()


def bump() -> None:
    """A connection changed (the service, after its commit): workers read it again."""
    if not has_app_context():
        return
    try:
        get_redis(current_app).incr(GENERATION)
    except RedisError:
        with _cache_lock:  # at least this process forgets; others within CACHE_SECONDS
            _cache.clear()


def for_team(team_id: str, name: str, settings: EngineSettings) -> Resolved | None:
    values = {"team": team_id, "name": name}
    try:
        raw: Any = get_redis(current_app).get(GENERATION)
        generation = int(raw or 0)
    except RedisError:
        return _read(_OF_TEAM, settings, values)  # no way to know it is fresh: read it
    key, now = (team_id, name), time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == generation and now - hit[1] < CACHE_SECONDS:
        return hit[2]
    found = _read(_OF_TEAM, settings, values)
    if found is not None:
        found = replace(found, generation=generation)
    with _cache_lock:
        _cache[key] = (generation, now, found)
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def for_run(run_id: str, name: str, settings: EngineSettings) -> Resolved | None:
    """The connection ``name`` of the run's team, decrypted; None when it has none."""
    return _read(select(*_COLUMNS).join(Run, Run.team_id == Connection.team_id)
                 .where(Run.id == run_id, Connection.name == name), settings)


def _read(query: Any, settings: EngineSettings,
          values: dict[str, Any] | None = None) -> Resolved | None:
    """Read on a connection of its own: the attempt's session is the engine's."""
    with db.engine.connect() as conn:
        row = conn.execute(query, values or {}).first()
    if row is None:
        return None
    return fields_of(row.id, row.name, row.type, dict(row.config or {}),
                     secret_fields(row.ciphertext, settings))
