"""Workers and schedulers outlive Redis: when it goes away they wait for it, trying again
with a growing pause (1, 2, 4 ... seconds, at most ``REDIS_RECONNECT_MAX``) and logging
each failed try, then carry on. Whoever supervises them (``flask --app app up``,
systemd, Kubernetes) needs to restart nothing.

What RQ does by itself is kept: an idle worker's dequeue loop already retries a lost
connection (with RQ's own backoff, capped at the same maximum here). What it does not
is done here, around one round of ``Worker.work`` / ``RQScheduler.work``:

* a worker whose round ended on Redis (it quits when a job's bookkeeping, a heartbeat
  or its shutdown fails to reach Redis) is replaced by a new worker once Redis answers:
  a new name and registration; the old one is recorded dead, so the reaper retries at
  once the attempt it may have been running (the database says what was under way);
* a scheduler (which raises on the first failed heartbeat) works again with the same
  identity, so it takes back its own queue locks if they survived;
* SIGTERM or SIGINT while waiting ends the process at once: there is no job to finish.

A round that ends because a stop was asked for ends the process as before.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Errors that mean "Redis is not there": a refused or reset connection, a timeout.
LOST = (RedisError, OSError)


class Backoff:
    """1, 2, 4 ... seconds between tries, never more than ``cap``."""

    def __init__(self, cap: float, first: float = 1.0) -> None:
        self.cap = max(first, cap)
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return delay


def stop_event() -> threading.Event:
    """An event SIGTERM and SIGINT set from now on (until a round of work installs its
    own handlers): between rounds, a stop must not wait for Redis."""
    stop = threading.Event()

    def handler(*_: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


def wait_for_redis(conn: Redis, what: str, cap: float, stop: threading.Event) -> bool:
    """Until Redis answers a PING: True, or False when a stop was asked for meanwhile."""
    backoff = Backoff(cap)
    tries = 0
    while not stop.is_set():
        try:
            conn.ping()
        except LOST as exc:
            tries += 1
            delay = backoff.next()
            log.warning("%s: Redis unreachable (%s); try %d failed, next in %.0fs",
                        what, exc, tries, delay)
            stop.wait(delay)
            continue
        if tries:
            log.info("%s: Redis answers again after %d failed tries; carrying on", what, tries)
        return True
    return False


# A round that ends within this many seconds of its start, without a stop, is followed
# by a growing pause (a fault that repeats at once must not spin).
QUICK_ROUND = 10.0


def keep_working(conn: Redis, what: str, cap: float,
                 new_round: Callable[[threading.Event], Any], run: Callable[[Any], bool],
                 stopped: Callable[[Any], bool],
                 bury: Callable[[Any], None] | None = None) -> None:
    """Run rounds of work until one ends on a stop.

    ``new_round(stop)`` makes the worker or scheduler of a round (it may return the
    previous one; ``stop`` is set by a SIGTERM that came before the round installed its
    own handlers); ``run(it)`` works, and returns True when its end was normal (a burst
    worker done, a scheduler stopped); ``stopped(it)`` says whether a stop was asked
    for; ``bury(it)`` tidies after a round that failed, once Redis answers again."""
    stop = stop_event()
    failed: Any = None
    pause = Backoff(cap)
    while wait_for_redis(conn, what, cap, stop):
        if failed is not None and bury is not None:
            with suppress(*LOST):
                bury(failed)
        current: Any = None
        began = time.monotonic()
        try:
            current = new_round(stop)
            if run(current):
                return
            failure: BaseException | None = None
        except LOST as exc:
            failure = exc
        if stop.is_set() or (current is not None and stopped(current)):
            return
        log.warning("%s: stopped working (%s); starting again once Redis answers", what,
                    failure or "it quit on an error, see above")
        failed = current
        stop = stop_event()
        if time.monotonic() - began < QUICK_ROUND:
            stop.wait(pause.next())
        else:
            pause = Backoff(cap)
