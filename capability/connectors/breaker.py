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
# Bumped by every change of a connection (``connections.resolve.bump``) and of a breaker
# (``record``, after its write): while it stays the same, a worker's cached connection
# is current, and so is the breaker's state it read under it (``admit``).
GENERATION = "apg:connections:generation"
# connection id -> (the generation it was read under, when, (open_until, failures))
_READINGS: dict[str, tuple[int, float, tuple[Any, Any]]] = {}
_READINGS_MAX = 1024
# A reading is also made again after this long: a change made by hand in Redis, without
# the bump, is seen within it (as a connection edited by hand: ``connections.resolve``).
READING_SECONDS = 30.0


def _key(connection_id: str) -> str:
    return f"{PREFIX}{connection_id}"


def admit(redis: Any, connection_id: str, cooldown: float,
          generation: int | None = None) -> tuple[bool, str | None, bool]:
    """Whether an attempt may use the connection now; the reason when not (the end of
    the open period); and whether the breaker has anything recorded (nothing to reset
    after a success when not). Past the open period, the first caller gets the probe,
    the others wait. ``generation``: the current ``GENERATION``, when the caller read
    it (the connection's lookup): a reading made under it is used again, no round trip
    (a task after the first on a healthy connection)."""
    kept = _READINGS.get(connection_id) if generation is not None else None
    at = time.monotonic()
    if kept is not None and kept[0] == generation and at - kept[1] < READING_SECONDS:
        raw, failures = kept[2]
    else:
        raw, failures = redis.hmget(_key(connection_id), "open_until", "failures")
        if generation is not None:
            if len(_READINGS) >= _READINGS_MAX:
                _READINGS.clear()
            _READINGS[connection_id] = (generation, at, (raw, failures))
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
    # Each write is followed by the generation's bump, in the same MULTI: a reading taken
    # before the bump is then never current (``admit``).
    if not failed:
        with redis.pipeline() as pipe:
            pipe.delete(key, f"{key}:probe")
            pipe.incr(GENERATION)
            pipe.execute()
        return
    with redis.pipeline() as pipe:
        pipe.hincrby(key, "failures", 1)
        pipe.hget(key, "open_until")
        pipe.incr(GENERATION)
        failures, was_open, _ = pipe.execute()
    if threshold > 0 and (int(failures) >= threshold or was_open is not None):
        with redis.pipeline() as pipe:
            pipe.hset(key, "open_until", str(time.time() + cooldown))
            pipe.delete(f"{key}:probe")
            pipe.incr(GENERATION)
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
