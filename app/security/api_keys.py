"""API keys (AGENTS.md, "API keys"): a machine or an AI agent acts as a user, narrowed.

A key reads ``apk_<prefix>_<secret>``. Only an HMAC-SHA256 of the whole key under a
server pepper is stored (keys are long random strings: a slow hash would buy nothing),
found by its prefix, which also names the key in lists and in the audit trail.

What a key may do is decided at every use, never stored: the intersection of

* its scopes (``read``, ``run``, ``author``),
* its teams (a subset of the user's; none listed: all of the user's teams *now*),
* the user's roles *now*: a user who loses a role or a team loses it through every key.

In the services that becomes an ``Actor`` whose roles are capped by the scopes (Author
only with ``author``, Operator only with ``run``, Viewer only with ``read``; never Admin
or Auditor), whose teams are narrowed, and which carries ``via = "api_key:<prefix>"``
and the scopes. FAB's permission checks are narrowed the same way
(``permits``): a permission is granted through a key only when a capped role holds it
and the key has the scope the permission needs, so Admin-only endpoints never accept a
key. Revocation, expiry and the IP allow-list are read from the database at every use,
so a revoked key is refused on the next request of every process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update

from app.errors import Forbidden, NotFound, ValidationFailed
from app.extensions import DbSession
from app.models import ApiKey, Team, Tenant
from app.security import access, memberships
from app.security.actor import Actor, roles_of
from app.security.roles import ADMIN, AUTHOR, OPERATOR, VIEWER

TOKEN_PREFIX = "apk_"
SCOPES = ("read", "run", "author")
# The role each scope lets a key use, and the roles of a user that grant it.
SCOPE_ROLE = {"read": VIEWER, "run": OPERATOR, "author": AUTHOR}
_GRANTED_BY = {
    VIEWER: frozenset({VIEWER, OPERATOR, AUTHOR, ADMIN}),
    OPERATOR: frozenset({OPERATOR, AUTHOR, ADMIN}),
    AUTHOR: frozenset({AUTHOR, ADMIN}),
}
# The scope each FAB permission needs through a key; any other permission (menus,
# forms, the user's own profile) is never granted to a key.
PERMISSION_SCOPE = {
    "can_read": "read", "can_get": "read", "can_list": "read", "can_show": "read",
    "can_info": "read", "can_run": "run", "can_control": "run", "can_post": "run",
    "can_write": "author",
}
# Views a key never reaches, whatever its scopes: a key cannot make or revoke keys.
KEYLESS_VIEWS = frozenset({"ApiKeys"})
_PREFIX_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no look-alikes
PREFIX_LENGTH = 10
LAST_USED_EVERY = 60.0  # seconds between writes of last_used_at for one key
REFUSED = "Invalid API key"
DEFAULT_RATE_LIMIT = "600 per minute"


class KeyRefused(Exception):
    """401: the reason never says whether a key with that prefix exists."""

    def __init__(self, reason: str, key_id: str | None = None,
                 user_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id
        self.user_id = user_id


class RateLimited(Exception):
    def __init__(self, state: RateState) -> None:
        super().__init__("API key rate limit exceeded")
        self.state = state
        self.retry_after = max(1, int(state.reset - time.time()))


@dataclass(frozen=True)
class KeyUse:
    """A key that passed its checks, for this request."""

    id: str
    prefix: str
    user_id: int
    scopes: frozenset[str]
    teams: frozenset[str]  # empty: all of the user's teams


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset: int  # epoch seconds when the window ends

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset)}


# ------------------------------------------------------------------- hashing

def pepper(config: Any) -> bytes:
    """``API_KEY_PEPPER``, else one derived from ``SECRET_KEY`` (changing either makes
    every key invalid: documented in the installation guide)."""
    configured = config.get("API_KEY_PEPPER")
    if configured:
        return str(configured).encode()
    secret = str(config.get("SECRET_KEY") or "").encode()
    return hmac.new(secret, b"apg api key pepper", hashlib.sha256).digest()


def digest(token: str, key: bytes) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def split(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    parts = token[len(TOKEN_PREFIX):].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != PREFIX_LENGTH or len(parts[1]) < 32:
        return None
    if any(c not in _PREFIX_ALPHABET for c in parts[0]):
        return None
    return parts[0], parts[1]


def _new_token() -> tuple[str, str]:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return prefix, f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


# ------------------------------------------------------------------- use

def _allowed_from(ip: str | None, allowed: list[str]) -> bool:
    if not allowed:
        return True
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in allowed)


def authenticate(session: DbSession, token: str, ip: str | None,
                 config: Any = None) -> KeyUse:
    """The key ``token`` names, checked now (hash, revocation, expiry, IP, user active);
    records its last use (at most once a minute, or when the address changes).
    ``config``: the app's (default: the current app's)."""
    config = _config(config)
    parts = split(token)
    if parts is None:
        raise KeyRefused(f"{REFUSED}: malformed")
    from flask_appbuilder.security.sqla.models import User

    # The key, whether its user is active, the permission epoch and the user's teams
    # (for the request's actor: app.security.memberships), in one statement.
    found = session.execute(
        select(ApiKey, User.active, access.EPOCH,
               memberships.column(session, ApiKey.user_id))
        .join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == parts[0])).first()
    key, active, epoch, teams = found if found is not None else (None, False, None, None)
    if key is None or not hmac.compare_digest(key.secret_hash, digest(token, pepper(config))):
        raise KeyRefused(f"{REFUSED}: unknown key")
    # The caller holds the real key from here on: saying why it is refused reveals
    # nothing about other keys.
    now = dt.datetime.now(dt.UTC)
    if key.revoked_at is not None:
        raise KeyRefused(f"{REFUSED}: revoked", key.id, key.user_id)
    if key.expires_at is not None and _aware(key.expires_at) <= now:
        raise KeyRefused(f"{REFUSED}: expired", key.id, key.user_id)
    if not _allowed_from(ip, list(key.allowed_ips or [])):
        raise KeyRefused(f"{REFUSED}: not allowed from this address", key.id, key.user_id)
    if not active:
        raise KeyRefused(f"{REFUSED}: its user is inactive", key.id, key.user_id)
    last = key.last_used_at
    if last is None or (now - _aware(last)).total_seconds() >= LAST_USED_EVERY \
            or key.last_used_ip != ip:
        session.execute(update(ApiKey).where(ApiKey.id == key.id)
                        .values(last_used_at=now, last_used_ip=ip))
        session.commit()
    access.observed(epoch)
    memberships.keep(key.user_id, teams)
    return KeyUse(key.id, key.prefix, key.user_id, frozenset(key.scopes or ()),
                  frozenset(key.teams or ()))


def _config(config: Any) -> Any:
    if config is not None:
        return config
    from flask import current_app

    return current_app.config


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def capped_roles(user_roles: frozenset[str], scopes: frozenset[str]) -> frozenset[str]:
    """The user's roles a key with ``scopes`` may act with."""
    return frozenset(role for scope, role in SCOPE_ROLE.items()
                     if scope in scopes and user_roles & _GRANTED_BY[role])


def narrow(session: DbSession, actor: Actor, use: KeyUse) -> Actor:
    """``actor`` (the key's user, as they are now) narrowed by the key."""
    roles = capped_roles(actor.roles, use.scopes)
    if actor.is_admin:
        # An Admin belongs to no team to see them all: through a key, the key's teams,
        # or every team.
        stmt = select(Team.id, Tenant.id, Tenant.name).join(Tenant, Tenant.id == Team.tenant_id)
        if use.teams:
            stmt = stmt.where(Team.id.in_(sorted(use.teams)))
        rows = session.execute(stmt).all()
    else:
        rows = [r for r in memberships.taken(session, use.user_id)
                if not use.teams or r[0] in use.teams]
    return Actor(
        username=actor.username, user_id=actor.user_id, roles=roles,
        team_ids=frozenset(r[0] for r in rows), tenant_ids=frozenset(r[1] for r in rows),
        tenant_names=tuple(sorted({r[2] for r in rows})), ip=actor.ip,
        request_id=actor.request_id, via=f"api_key:{use.prefix}", scopes=use.scopes,
    )


def person_of(user: Any, ip: str | None, request_id: str | None) -> Actor:
    """The user's roles (direct and through groups), without their teams: ``narrow``
    reads the teams the key may reach."""
    return Actor(username=user.username, user_id=user.id, roles=roles_of(user), ip=ip,
                 request_id=request_id)


def actor_for(session: DbSession, use: KeyUse, ip: str | None,
              request_id: str | None) -> Actor:
    """The actor of a key's use: its user now, narrowed by the key."""
    from flask_appbuilder.security.sqla.models import User

    user = session.get(User, use.user_id)
    if user is None or not user.is_active:
        raise KeyRefused(f"{REFUSED}: its user is inactive", use.id, use.user_id)
    person = person_of(user, ip, request_id)
    return narrow(session, person, use)


def permits(permission: str, view: str, use: KeyUse) -> bool:
    """Whether a key's scopes reach this FAB permission at all (the capped roles must
    hold it too: ``ApgSecurityManager.has_access``)."""
    needed = PERMISSION_SCOPE.get(permission)
    return view not in KEYLESS_VIEWS and needed is not None and needed in use.scopes


# ------------------------------------------------------------------- rate limit

def check_rate(use: KeyUse, redis: Any = None, limit: str | None = None) -> RateState:
    """One request of this key against ``limit`` (``API_KEY_RATE_LIMIT``, e.g. ``600 per
    minute``), counted in Redis so every web process shares it (a fixed window)."""
    from limits import parse

    if redis is None or limit is None:
        from flask import current_app

        from app.runtime.redis_conn import get_redis

        redis = redis if redis is not None else get_redis(current_app)  # type: ignore[arg-type]
        limit = limit or current_app.config.get("API_KEY_RATE_LIMIT") or DEFAULT_RATE_LIMIT
    item = parse(limit)
    window = int(item.get_expiry())
    now = time.time()
    start = int(now // window) * window
    name = f"apg:apikey:rate:{use.id}:{start}"
    pipe = redis.pipeline()
    pipe.incr(name)
    pipe.expire(name, window + 1)
    count = int(pipe.execute()[0])
    state = RateState(item.amount, max(0, item.amount - count), start + window)
    if count > item.amount:
        raise RateLimited(state)
    return state


# ------------------------------------------------------------------- managing keys

class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(min_length=1)
    teams: list[str] = Field(default_factory=list)
    expires_at: dt.datetime | None = None
    allowed_ips: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError("must be printable text")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope {unknown[0]!r}: one of {', '.join(SCOPES)}")
        return [s for s in SCOPES if s in value]

    @field_validator("allowed_ips")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            try:
                out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
        return out

    @field_validator("expires_at")
    @classmethod
    def _expiry(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        value = _aware(value)
        if value <= dt.datetime.now(dt.UTC):
            raise ValueError("must be in the future")
        return value


def _team_ids(session: DbSession, actor: Actor, names: list[str]) -> list[str]:
    """Team names (or ids) to ids, each one the actor belongs to (Admin: any)."""
    ids = []
    for i, name in enumerate(names):
        row = session.execute(select(Team.id).where((Team.name == name) | (Team.id == name))
                              ).scalar()
        if row is None or not (actor.is_admin or row in actor.team_ids):
            raise ValidationFailed("Invalid key", [
                {"path": f"teams.{i}", "message": f"{name!r} is not one of your teams"}])
        ids.append(row)
    return sorted(set(ids))


def _require_person(actor: Actor) -> None:
    if actor.is_system or actor.scopes is not None:
        raise Forbidden("API keys are made and revoked by their user in person, "
                        "not through a key")


def create_key(session: DbSession, actor: Actor, data: KeyIn,
               config: Any = None) -> tuple[ApiKey, str]:
    """A new key of ``actor`` and its token, which is never shown again. The caller
    records the audit event and commits."""
    _require_person(actor)
    usable = capped_roles(actor.roles, frozenset(SCOPES))
    for i, scope in enumerate(data.scopes):
        if SCOPE_ROLE[scope] not in usable:
            raise ValidationFailed("Invalid key", [{
                "path": f"scopes.{i}",
                "message": f"{scope!r} needs the role {SCOPE_ROLE[scope]}, which you do not have"}])
    teams = _team_ids(session, actor, data.teams)
    prefix, token = _new_token()
    key = ApiKey(user_id=actor.user_id, name=data.name, prefix=prefix,
                 secret_hash=digest(token, pepper(_config(config))), scopes=data.scopes,
                 teams=teams, allowed_ips=data.allowed_ips, expires_at=data.expires_at)
    session.add(key)
    session.flush()
    return key, token


def list_keys(session: DbSession, actor: Actor) -> list[ApiKey]:
    """The actor's keys, newest first (Admin: everyone's)."""
    _require_person(actor)
    stmt = select(ApiKey).order_by(ApiKey.created_at.desc())
    if not actor.is_admin:
        stmt = stmt.where(ApiKey.user_id == actor.user_id)
    return list(session.execute(stmt).scalars())


def get_key(session: DbSession, actor: Actor, key_id: str) -> ApiKey:
    _require_person(actor)
    key = session.get(ApiKey, key_id)
    if key is None or not (actor.is_admin or key.user_id == actor.user_id):
        raise NotFound(f"API key {key_id} not found")
    return key


def revoke_key(session: DbSession, actor: Actor, key_id: str) -> ApiKey:
    """Revoked at once: every process reads ``revoked_at`` at the key's next use."""
    key = get_key(session, actor, key_id)
    if key.revoked_at is None:
        key.revoked_at = dt.datetime.now(dt.UTC)
        session.flush()
    return key


def key_dict(session: DbSession, key: ApiKey) -> dict[str, Any]:
    names = dict(session.execute(select(Team.id, Team.name).where(
        Team.id.in_(list(key.teams or [])))).all()) if key.teams else {}
    return {
        "id": key.id, "name": key.name, "prefix": key.prefix,
        "user": key.user.username if key.user is not None else None,
        "scopes": list(key.scopes or []), "teams": [names.get(t, t) for t in key.teams or []],
        "allowed_ips": list(key.allowed_ips or []),
        "created_at": _iso(key.created_at), "expires_at": _iso(key.expires_at),
        "last_used_at": _iso(key.last_used_at), "last_used_ip": key.last_used_ip,
        "revoked_at": _iso(key.revoked_at),
        "status": status_of(key),
    }


def status_of(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and _aware(key.expires_at) <= dt.datetime.now(dt.UTC):
        return "expired"
    return "active"


def _iso(value: dt.datetime | None) -> str | None:
    return _aware(value).isoformat() if value is not None else None
