"""A worker reads a connection's breaker once per generation (breaker.admit): the task
after the first on a healthy connection costs no Redis round trip for it, every change
of the breaker bumps the generation so that every worker reads it again, and the end of
an open period is seen by time, with no reading."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from app.runtime.redis_conn import get_redis
from capability.connectors import breaker
from tests.support.app import unique


def _generation(redis: Any) -> int:
    return int(redis.get(breaker.GENERATION) or 0)


def test_a_reading_is_kept_while_the_generation_stays(app: Flask) -> None:
    redis, cid = get_redis(app), unique("conn")
    now = _generation(redis)
    assert breaker.admit(redis, cid, 5, now) == (True, None, False)
    # A change made by hand, without the bump: not seen under the same generation...
    redis.hset(f"{breaker.PREFIX}{cid}", "open_until", str(time.time() + 60))
    assert breaker.admit(redis, cid, 5, now) == (True, None, False)
    # ... nor by a caller that knows no generation (it reads every time).
    assert breaker.admit(redis, cid, 5)[0] is False
    redis.delete(f"{breaker.PREFIX}{cid}")


def test_every_change_of_the_breaker_bumps_the_generation(app: Flask) -> None:
    redis, cid = get_redis(app), unique("conn")
    before = _generation(redis)
    breaker.record(redis, cid, True, threshold=2, cooldown=60)
    after_one = _generation(redis)
    assert after_one > before
    assert breaker.admit(redis, cid, 60, after_one) == (True, None, True)
    breaker.record(redis, cid, True, threshold=2, cooldown=60)  # opens it
    opened = _generation(redis)
    assert opened > after_one
    allowed, why, _ = breaker.admit(redis, cid, 60, opened)
    assert not allowed and why is not None and why.startswith("until ")
    breaker.record(redis, cid, False, threshold=2, cooldown=60)  # a success closes it
    closed = _generation(redis)
    assert closed > opened
    assert breaker.admit(redis, cid, 60, closed) == (True, None, False)


def test_the_end_of_an_open_period_needs_no_new_reading(app: Flask) -> None:
    redis, cid = get_redis(app), unique("conn")
    breaker.record(redis, cid, True, threshold=1, cooldown=1)  # open for a second
    now = _generation(redis)
    assert breaker.admit(redis, cid, 1, now)[0] is False
    time.sleep(1.1)
    # The same reading, its open period over: one caller probes, the others wait.
    assert breaker.admit(redis, cid, 1, now) == (True, None, True)
    assert breaker.admit(redis, cid, 1, now) == (False, "while one attempt probes it", True)
    breaker.record(redis, cid, False, threshold=1, cooldown=1)
