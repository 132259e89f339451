"""A connection's circuit breaker (CONNECTORS.md): consecutive connection failures open
it, tasks then fail fast and retriable without touching the system, one attempt probes
after the cooldown, a success closes it; the state is in Redis, seen by every worker,
and shown on the connection."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.runtime.redis_conn import get_redis
from capability.connectors import breaker
from tests.support.connections import SECRET
from tests.support.runs import run_to_end

THRESHOLD = 3


def _task() -> list[dict[str, Any]]:
    return [{"id": "q", "type": "sql", "with": {"connection": "flaky", "query": "SELECT 1"}}]


def _cooldown_over(redis: Any, cid: str) -> None:
    """Move the breaker's open period into the past, as a change of the breaker's own is
    made: with the generation bumped, so that workers read it again (a worker keeps
    what it read while the generation stays the same)."""
    with redis.pipeline() as pipe:
        pipe.hset(f"{breaker.PREFIX}{cid}", "open_until", str(time.time() - 1))
        pipe.incr(breaker.GENERATION)
        pipe.execute()


def test_the_breaker_opens_fails_fast_probes_and_closes(app: Flask, client: FlaskClient,
                                                        op: dict[str, Any]) -> None:
    app.config["CONNECTION_BREAKER_FAILURES"] = THRESHOLD
    try:
        # Port 1 on loopback: nothing listens, every connection is refused at once.
        r = client.post("/api/v1/connections/", headers=op["h"], json={
            "team": op["team"]["name"], "name": "flaky", "type": "mysql",
            "config": {"host": "127.0.0.1", "port": 1, "database": "d", "username": "u"},
            "secret": {"password": SECRET}})
        assert r.status_code == 201, r.get_json()
        cid = r.get_json()["result"]["id"]
        assert r.get_json()["result"]["breaker"] == {"state": "closed", "failures": 0,
                                                     "open_until": None}
        for _ in range(THRESHOLD):
            run = run_to_end(app, client, op, _task())
            error = run["by_task"]["q"]["error"]
            assert "Connection refused" in error or "Can't connect" in error, error
        shown = client.get(f"/api/v1/connections/{cid}", headers=op["h"]).get_json()["result"]
        assert shown["breaker"]["state"] == "open"
        assert shown["breaker"]["failures"] == THRESHOLD
        # Open: the next task fails fast, retriable, naming the connection and the time.
        run = run_to_end(app, client, op, _task())
        error = run["by_task"]["q"]["error"]
        until = shown["breaker"]["open_until"]
        assert error == f"circuit open for connection 'flaky' until {until}"
        # The cooldown passes (moved in Redis, as every worker would see it): one probe,
        # refused again, reopens it.
        redis = get_redis(app)
        _cooldown_over(redis, cid)
        assert client.get(f"/api/v1/connections/{cid}", headers=op["h"]).get_json()[
            "result"]["breaker"]["state"] == "half_open"
        run = run_to_end(app, client, op, _task())
        assert "circuit open" not in run["by_task"]["q"]["error"]
        assert client.get(f"/api/v1/connections/{cid}", headers=op["h"]).get_json()[
            "result"]["breaker"]["state"] == "open"
        # Fixed (a database that answers), and the cooldown over: the probe succeeds.
        maria = {"host": "127.0.0.1", "port": 3306, "database": "mysql", "username": "root"}
        r = client.put(f"/api/v1/connections/{cid}", headers=op["h"], json={
            "config": maria, "secret": {"password": ""}})
        assert r.status_code == 200, r.get_json()
        _cooldown_over(redis, cid)
        run = run_to_end(app, client, op, _task())
        assert run["status"] == "succeeded", run["by_task"]["q"]
        assert client.get(f"/api/v1/connections/{cid}", headers=op["h"]).get_json()[
            "result"]["breaker"] == {"state": "closed", "failures": 0, "open_until": None}
    finally:
        app.config["CONNECTION_BREAKER_FAILURES"] = 5
