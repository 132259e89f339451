"""Task logs (CONNECTORS.md, "Task logs"): what a ``python`` callable writes with
``logging`` and what a connector writes through ``context.log``, masked and bounded,
with the engine's lines (start, retry decision, timeout, cancel); served by ``GET
/api/v1/runs/<id>/tasks/<task_id>/logs?attempt=N`` and followed live on a real worker
while the attempt runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.security.actor import SYSTEM
from capability.engine import tasklog
from capability.models import TaskAttempt, TaskRun
from capability.secrets import service as secrets
from tests.support.app import unique
from tests.support.runs import make, run_to_end, start, wait_for

SECRET = "pw-4a7c19e2-in-a-log-line"


def add_secret(app: Flask, team: str, name: str, value: str) -> None:
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config,
                              secrets.SecretIn(team=team, name=name, value=value))
        db.session.remove()


def logs(client: FlaskClient, op: dict[str, Any], run_id: str, task_id: str,
         **args: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in args.items())
    return client.get(f"/api/v1/runs/{run_id}/tasks/{task_id}/logs?{query}", headers=op["h"])


def messages(body: dict[str, Any]) -> list[str]:
    return [line["message"] for line in body["lines"]]


def test_a_python_task_s_logging_is_its_log_masked_with_the_engine_s_lines(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    add_secret(app, op["team"]["name"], "db_password", SECRET)
    run = run_to_end(app, client, op, [{
        "id": "talk", "type": "python", "with": {
            "callable": "tests.support.callables:chatty",
            "kwargs": {"lines": 4, "secret": "{{ secrets.db_password }}"}}}])
    assert run["status"] == "succeeded", run
    r = logs(client, op, run["id"], "talk")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()["result"]
    assert body["attempt"] == 1 and body["attempts"] == [1] and body["live"] is False
    assert body["truncated"] == 0
    got = messages(body)
    assert got[0].startswith("attempt 1 started on ")
    assert got[1:5] == ["connecting with ***", "line 1: slow answer", "line 2", "line 3"]
    assert got[5].startswith("succeeded in ")
    assert len(got) == 6  # the DEBUG line is below the log's level
    assert [line["level"] for line in body["lines"][1:3]] == ["info", "warning"]
    assert all(line["at"] >= body["lines"][0]["at"][:19] for line in body["lines"])
    assert SECRET not in r.get_data(as_text=True)


def test_each_attempt_has_its_own_log_and_the_retry_decision(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    key = unique("logretry")
    run = run_to_end(app, client, op, [{
        "id": "flaky", "type": "python",
        "with": {"callable": "tests.support.callables:flaky",
                 "kwargs": {"key": key, "fail_times": 1}},
        "retry": {"max_attempts": 3, "delay": "1s", "jitter": False}}])
    assert run["status"] == "succeeded", run
    first = logs(client, op, run["id"], "flaky", attempt=1).get_json()["result"]
    assert first["attempts"] == [1, 2] and first["status"] == "failed"
    got = messages(first)
    assert "RuntimeError: flaky failure 1" in got[1] and got[1].startswith("failed in ")
    assert first["lines"][1]["level"] == "error"
    assert got[2].startswith("retry: attempt 2 not before ")
    latest = logs(client, op, run["id"], "flaky").get_json()["result"]
    assert latest["attempt"] == 2 and messages(latest)[-1].startswith("succeeded in ")


def test_a_failure_without_retry_and_a_timeout_say_so(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    run = run_to_end(app, client, op, [
        {"id": "boom", "type": "python",
         "with": {"callable": "tests.support.callables:chatty",
                  "kwargs": {"lines": 1, "fail": True}}},
        {"id": "slow", "type": "python", "timeout": "1s",
         "with": {"callable": "tests.support.callables:sleep", "kwargs": {"seconds": 5}}},
    ])
    boom = messages(logs(client, op, run["id"], "boom").get_json()["result"])
    assert boom[1] == "connecting with "
    assert "RuntimeError: chatty failed on purpose" in boom[2]
    assert boom[3] == "not retried"
    slow = messages(logs(client, op, run["id"], "slow").get_json()["result"])
    assert "timed out after 1s" in slow[1]


def test_a_log_is_bounded_and_counts_what_it_dropped(
        app: Flask, client: FlaskClient, op: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "TASK_LOG_MAX_LINES", 5)
    run = run_to_end(app, client, op, [{
        "id": "flood", "type": "python",
        "with": {"callable": "tests.support.callables:chatty", "kwargs": {"lines": 50}}}])
    body = logs(client, op, run["id"], "flood").get_json()["result"]
    assert body["truncated"] == 45
    assert len(body["lines"]) == 5 + 2  # the engine's start and end lines besides


def test_a_connector_writes_through_context_log(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    name = f"{unique('logs')}.db"
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(files / name).close()
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "local", "type": "sqlite",
        "config": {"path": name}})
    assert r.status_code == 201, r.get_json()
    run = run_to_end(app, client, op, [{
        "id": "q", "type": "sql", "with": {"connection": "local", "query": "SELECT 1 AS one"}}])
    assert run["status"] == "succeeded", run
    got = messages(logs(client, op, run["id"], "q").get_json()["result"])
    assert any(m.endswith(": 1 rows, rowcount 1") or "1 rows" in m for m in got[1:-1]), got


def test_bad_questions_are_422_or_404(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    run = run_to_end(app, client, op, [{"id": "a", "type": "noop"}])
    assert logs(client, op, run["id"], "a", attempt=0).status_code == 422
    assert logs(client, op, run["id"], "a", attempt="x").status_code == 422
    assert logs(client, op, run["id"], "a", attempt=9).status_code == 404
    assert logs(client, op, run["id"], "nope").status_code == 404
    assert logs(client, op, run["id"], "a", item=0).status_code == 404
    body = logs(client, op, run["id"], "a").get_json()["result"]
    assert messages(body)[0].startswith("attempt 1 started")


def test_for_each_elements_have_their_own_logs(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    run = run_to_end(app, client, op, [{
        "id": "each", "type": "python", "for_each": "{{ [1, 2] }}",
        "with": {"callable": "tests.support.callables:chatty",
                 "kwargs": {"lines": "{{ item + 2 }}"}}}])
    assert run["status"] == "succeeded", run
    second = logs(client, op, run["id"], "each", item=1).get_json()["result"]
    assert messages(second)[1:5] == ["connecting with ", "line 1: slow answer", "line 2",
                                     "line 3"]
    first = logs(client, op, run["id"], "each", item=0).get_json()["result"]
    assert len(first["lines"]) == 3 + 2


@pytest.fixture()
def worker(processes: Any) -> None:
    processes("worker")


def stored_lines(app: Flask, run_id: str) -> list[str]:
    """The messages stored with the run's attempts (``TaskAttempt.log``)."""
    with app.app_context():
        rows = db.session.execute(
            select(TaskAttempt.log).join(TaskRun, TaskRun.id == TaskAttempt.task_run_id)
            .where(TaskRun.run_id == run_id, TaskAttempt.log.is_not(None))).scalars().all()
        db.session.remove()
    return [line["message"] for lines in rows for line in lines]




def test_a_running_attempt_s_log_is_followed_live_then_kept(
        app: Flask, client: FlaskClient, op: dict[str, Any], worker: None) -> None:
    wid = make(client, op, [{"id": "work", "type": "python",
                             "with": {"callable": "tests.support.callables:chatty_then_sleep",
                                      "kwargs": {"key": "live-1", "seconds": 3}}}])
    run_id = start(client, op, wid).get_json()["id"]

    def live_line() -> Any:
        body = logs(client, op, run_id, "work").get_json()["result"]
        return body if body["live"] and "working on live-1" in messages(body) else None

    body = wait_for(live_line, 30)
    assert not any(m.startswith("succeeded") for m in messages(body))

    def ended() -> Any:
        body = logs(client, op, run_id, "work").get_json()["result"]
        return body if not body["live"] and body["status"] == "succeeded" else None

    done = messages(wait_for(ended, 30))
    assert done[1:3] == ["working on live-1", "done with live-1"]
    assert stored_lines(app, run_id) == done[1:3]
    with app.app_context():  # the live list goes with the end (sent off the task's thread)
        assert wait_for(lambda: not get_redis(app).keys("apg:tasklog:*") or None, 10)


def test_a_cancelled_attempt_keeps_what_it_wrote(
        app: Flask, client: FlaskClient, op: dict[str, Any], worker: None) -> None:
    wid = make(client, op, [{"id": "work", "type": "python",
                             "with": {"callable": "tests.support.callables:chatty_then_sleep",
                                      "kwargs": {"key": "cancel-1", "seconds": 60}}}])
    run_id = start(client, op, wid).get_json()["id"]
    wait_for(lambda: "working on cancel-1" in messages(
        logs(client, op, run_id, "work").get_json()["result"]), 30)
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"]).status_code == 200

    def kept() -> Any:
        body = logs(client, op, run_id, "work").get_json()["result"]
        return body if body["status"] == "cancelled" and not body["live"] else None

    got = messages(wait_for(kept, 30))
    assert got[1] == "working on cancel-1"
    assert got[-1].startswith("cancelled")
    # The worker stored what it had written once it was stopped.
    assert wait_for(lambda: stored_lines(app, run_id), 10) == ["working on cancel-1"]


def test_live_lines_go_in_order_off_the_task_s_thread_then_the_list_goes(app: Flask) -> None:
    """A line written live costs the task no Redis round trip: a sender thread pushes
    lines in the order written, then drops the list after the record; a Redis that
    cannot be reached loses only the live copy."""
    with app.app_context():
        redis = get_redis(app)
    attempt = unique("att")
    writer = tasklog.Writer(attempt, 10, lambda m: m, redis)
    for n in range(5):
        writer("info", f"line {n}")
    assert tasklog.sent()
    key = tasklog.LIVE_PREFIX + attempt
    assert [line["message"] for line in tasklog.live_lines(redis, attempt)] == [
        f"line {n}" for n in range(5)]
    assert 0 < redis.ttl(key) <= tasklog.LIVE_TTL
    tasklog.drop_live(redis, writer)
    assert tasklog.sent()
    assert not redis.exists(key)

    from redis import Redis

    gone = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    lost = tasklog.Writer(unique("att"), 10, lambda m: m, gone)
    lost("info", "kept all the same")  # never raises, never waits
    assert tasklog.sent()
    assert [line["message"] for line in lost.lines] == ["kept all the same"]
