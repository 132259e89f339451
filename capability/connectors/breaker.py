"""The circuit breaker of a connection (CONNECTORS.md, "Connections"): after
``CONNECTION_BREAKER_FAILURES`` consecutive connection-class failures (those a retry
could cure: refused, timed out, lost) it opens for ``CONNECTION_BREAKER_COOLDOWN``
seconds, and tasks using the connection fail fast, retriable, without touching the
system; then one attempt probes (half-open) and its outcome closes or reopens it.

The state lives in Redis, so every worker of every machine sees the same breaker: a
hash per connection (``failures``, ``open_until``) and a probe claim (``SET NX``,
expiring after a cooldown, so a probe that died does not hold the breaker forever).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

PREFIX = "apg:breaker:"


def _key(connection_id: str) -> str:
    return f"{PREFIX}{connection_id}"


def admit(redis: Any, connection_id: str, cooldown: float) -> tuple[bool, str | None, bool]:
    """Whether an attempt may use the connection now; the reason when not (the end of
    the open period); and whether the breaker has anything recorded (nothing to reset
    after a success when not). Past the open period, the first caller gets the probe,
    the others wait."""
    found = redis.hmget(_key(connection_id), "open_until", "failures")
    raw, failures = found[0], found[1]
    if raw is None:
        return True, None, failures is not None
    open_until = float(raw)
    now = time.time()
    if now < open_until:
        return False, f"until {_iso(open_until)}", True
    if redis.set(f"{_key(connection_id)}:probe", "1", nx=True, ex=max(1, int(cooldown))):
        return True, None, True  # half-open: this attempt is the probe
    return False, "while one attempt probes it", True


def record(redis: Any, connection_id: str, failed: bool, threshold: int,
           cooldown: float) -> None:
    """The outcome of an attempt that used the connection: a connection-class failure
    counts (and opens the breaker at ``threshold``, or again after a failed probe); a
    success closes it."""
    key = _key(connection_id)
    if not failed:
        redis.delete(key, f"{key}:probe")
        return
    with redis.pipeline() as pipe:
        pipe.hincrby(key, "failures", 1)
        pipe.hget(key, "open_until")
        failures, was_open = pipe.execute()
    if threshold > 0 and (int(failures) >= threshold or was_open is not None):
        with redis.pipeline() as pipe:
            pipe.hset(key, "open_until", str(time.time() + cooldown))
            pipe.delete(f"{key}:probe")
            pipe.execute()


def state(redis: Any, connection_id: str) -> dict[str, Any]:
    """``{state: closed|open|half_open, failures, open_until}`` for the connection's page
    and the API."""
    found = redis.hgetall(_key(connection_id))
    failures = int(found.get(b"failures", 0))
    raw = found.get(b"open_until")
    if raw is None:
        return {"state": "closed", "failures": failures, "open_until": None}
    open_until = float(raw)
    label = "open" if time.time() < open_until else "half_open"
    return {"state": label, "failures": failures, "open_until": _iso(open_until)}


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(microsecond=0).isoformat()
