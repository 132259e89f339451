"""Cancel and timeouts reach the connectors (issue 13, item 6), on a real worker process:
a long PostgreSQL query is cancelled on the server (``pg_stat_activity`` shows it gone
within seconds, not after its 60 s), whether the run is cancelled or the task times
out; a slow HTTP peer is let go of at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support.app import LOOPBACK_PEERS
from tests.support.connections import postgres_body
from tests.support.runs import make, start

MARK = "apg_cancel_probe"


@pytest.fixture()
def worker(app: Flask) -> Iterator[None]:
    egress = f"{LOOPBACK_PEERS} 127.0.0.1:5432"
    app.config["EGRESS_ALLOW"] = egress
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "APG_SYNC_SECURITY": "0",
           "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"],
           "SECRET_KEY": app.config["SECRET_KEY"], "EGRESS_ALLOW": egress}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield
    proc.terminate()
    proc.wait(timeout=30)
    app.config["EGRESS_ALLOW"] = LOOPBACK_PEERS


def _probe_running() -> bool:
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    with admin.connect() as conn:
        found = conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            f"AND query LIKE '%{MARK}%' AND query NOT LIKE '%pg_stat_activity%'")).scalar()
    admin.dispose()
    return bool(found)


def _wait(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _running(client: FlaskClient, op: dict[str, Any], run_id: str) -> bool:
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    return bool(got["tasks"][0]["status"] == "running")


def _status(client: FlaskClient, op: dict[str, Any], run_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"])


def test_a_cancelled_run_cancels_its_query_on_the_server(
        app: Flask, client: FlaskClient, op: dict[str, Any], worker: None) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json=postgres_body(op, "db"))
    assert r.status_code == 201, r.get_json()
    wid = make(client, op, [{"id": "long", "type": "sql", "with": {
        "connection": "db", "query": f"SELECT pg_sleep(60) AS {MARK}"}}])
    run_id = start(client, op, wid).get_json()["id"]
    assert _wait(lambda: _running(client, op, run_id) and _probe_running(), 30)
    t0 = time.monotonic()
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"]).status_code == 200
    assert _wait(lambda: not _probe_running(), 10), "the query still runs on the server"
    assert time.monotonic() - t0 < 10
    assert _wait(lambda: _status(client, op, run_id)["status"] == "cancelled", 10)


def test_a_task_timeout_cancels_its_query_on_the_server(
        app: Flask, client: FlaskClient, op: dict[str, Any], worker: None) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json=postgres_body(op, "db"))
    assert r.status_code == 201, r.get_json()
    wid = make(client, op, [{"id": "long", "type": "sql", "timeout": "2s", "with": {
        "connection": "db", "query": f"SELECT pg_sleep(60) AS {MARK}"}}])
    run_id = start(client, op, wid).get_json()["id"]
    assert _wait(_probe_running, 30)
    assert _wait(lambda: _status(client, op, run_id)["status"] == "failed", 20)
    task = _status(client, op, run_id)["tasks"][0]
    # The statement's own timeout (what was left of the task's) stops it on the server,
    # or the task's timeout cancels it: either way within the task's 2 s.
    assert "statement timeout" in task["error"] or "timed out after 2s" in task["error"], task
    assert _wait(lambda: not _probe_running(), 5), "the query outlived its task"


def test_a_cancel_lets_go_of_a_slow_http_peer(app: Flask, client: FlaskClient,
                                             op: dict[str, Any], worker: None,
                                             httpserver: HTTPServer) -> None:
    released, reached = threading.Event(), threading.Event()

    def slow(request: Request) -> Response:
        reached.set()
        released.wait(60)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    wid = make(client, op, [{"id": "long", "type": "webhook", "with": {
        "url": httpserver.url_for("/slow"), "json": {}}}])
    try:
        run_id = start(client, op, wid).get_json()["id"]
        assert reached.wait(30)
        t0 = time.monotonic()
        assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"]).status_code == 200
        assert _wait(lambda: _status(client, op, run_id)["tasks"][0]["attempt_history"][0][
            "status"] == "cancelled", 10)
        assert time.monotonic() - t0 < 10
    finally:
        released.set()
