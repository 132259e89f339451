"""Login limits: failed logins counted per account and per client address in Redis.

Shared by every web process and by both ways in (the form and ``POST
/api/v1/security/login`` go through the security manager's ``auth_user_*``). After
``LOGIN_MAX_FAILURES`` failures for one account (``LOGIN_MAX_FAILURES_PER_ADDRESS`` from
one address) further attempts are refused, without looking at the password, for
``LOGIN_LOCKOUT_SECONDS``; each failure after a lockout doubles the next one, up to
``LOGIN_LOCKOUT_MAX_SECONDS``. A lockout always expires, so the right password works
again after at most that long; a success clears the account's count. Failures are
forgotten ``LOGIN_FAILURE_WINDOW`` seconds after the last one.

If Redis cannot be reached the limits are skipped (logged): a login must not depend on
them more than on the rest of the product, and FAB's per-address rate limit still holds.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis
from flask import Flask, Response, current_app, g

from app.runtime.redis_conn import get_redis

log = logging.getLogger(__name__)
PREFIX = "apg:login"
ACCOUNT = "account"
ADDRESS = "address"


class LoginLocked(Exception):
    """Logins for this account or from this address are refused for ``retry_after`` s."""

    def __init__(self, scope: str, retry_after: int) -> None:
        self.scope = scope
        self.retry_after = max(1, retry_after)
        what = "for this account" if scope == ACCOUNT else "from this address"
        unit = "second" if self.retry_after == 1 else "seconds"
        super().__init__(
            f"Too many failed logins {what}: try again in {self.retry_after} {unit}."
        )


@dataclass(frozen=True)
class Lockout:
    """A lockout that a failure just started (for the audit trail)."""

    scope: str
    failures: int
    seconds: int


def _subjects(username: str | None, ip: str | None) -> list[tuple[str, str, int]]:
    """(scope, key part, threshold) of each counter an attempt counts against."""
    config = current_app.config
    found = []
    if username:
        # Hashed: any string can be tried as a username, and keys stay short and safe.
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        found.append((ACCOUNT, digest, int(config["LOGIN_MAX_FAILURES"])))
    if ip:
        found.append((ADDRESS, ip, int(config["LOGIN_MAX_FAILURES_PER_ADDRESS"])))
    return found


def _enabled() -> bool:
    return bool(current_app.config.get("LOGIN_LIMITS_ENABLED", True))


def lockout_seconds(failures: int, threshold: int) -> int:
    """Length of the lockout started by the ``failures``-th failure (threshold: first)."""
    config = current_app.config
    base = int(config["LOGIN_LOCKOUT_SECONDS"])
    cap = int(config["LOGIN_LOCKOUT_MAX_SECONDS"])
    steps = min(failures - threshold, 32)  # 2**32 * base is past any cap
    return int(min(base * 2**steps, cap))


def check(username: str | None, ip: str | None) -> None:
    """Raise ``LoginLocked`` when the account or the address is locked out now."""
    if not _enabled():
        return
    try:
        client = get_redis(current_app)
        for scope, part, _ in _subjects(username, ip):
            ttl = int(client.pttl(f"{PREFIX}:lock:{scope}:{part}"))  # type: ignore[arg-type]
            if ttl > 0:
                locked = LoginLocked(scope, -(-ttl // 1000))
                # The rate limiter on the login routes rewrites Retry-After after the
                # view; ``restore_retry_after`` puts this one back.
                g.apg_login_retry_after = locked.retry_after
                raise locked
    except redis.RedisError as exc:
        log.warning("login limits skipped: Redis unavailable (%s)", exc)


def failed(username: str | None, ip: str | None) -> list[Lockout]:
    """Count a failed login; answers the lockouts it started."""
    if not _enabled():
        return []
    window = int(current_app.config["LOGIN_FAILURE_WINDOW"])
    started = []
    try:
        client = get_redis(current_app)
        for scope, part, threshold in _subjects(username, ip):
            key = f"{PREFIX}:fail:{scope}:{part}"
            pipe = client.pipeline()
            pipe.incr(key)
            pipe.expire(key, window)
            count = int(pipe.execute()[0])
            if count >= threshold:
                seconds = lockout_seconds(count, threshold)
                client.set(f"{PREFIX}:lock:{scope}:{part}", count, ex=seconds)
                started.append(Lockout(scope, count, seconds))
    except redis.RedisError as exc:
        log.warning("login failure not counted: Redis unavailable (%s)", exc)
    return started


def succeeded(username: str | None) -> None:
    """A right password clears the account's failures (not the address's: one valid
    account must not reset the count of an address guessing others)."""
    if not _enabled():
        return
    try:
        client = get_redis(current_app)
        for scope, part, _ in _subjects(username, None):
            client.delete(f"{PREFIX}:fail:{scope}:{part}", f"{PREFIX}:lock:{scope}:{part}")
    except redis.RedisError as exc:
        log.warning("login success not recorded: Redis unavailable (%s)", exc)


def restore_retry_after(response: Response) -> Response:
    retry_after = g.pop("apg_login_retry_after", None)
    if retry_after is not None and response.status_code == 429:
        response.headers["Retry-After"] = str(retry_after)
    return response


def init_app(app: Flask) -> None:
    # after_request hooks run last-registered first: registered before FAB builds the
    # limiter, this one runs after the limiter has written its own Retry-After.
    app.after_request(restore_retry_after)
