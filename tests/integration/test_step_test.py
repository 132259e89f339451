"""Testing one step (CONNECTORS.md, "Testing a step"): ``POST
/api/v1/workflows/<id>/tasks/<task_id>/test`` runs that task on a real worker process
with the given params and upstream outputs, returns ``{status, output, error, logs,
took_ms}``, makes no run, and is audited; Authors only; bad scopes are 422s naming the
path."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.security.actor import SYSTEM
from capability.models import Run
from capability.secrets import service as secrets
from capability.steps import service as steps
from tests.support.app import api_token, auth, unique
from tests.support.runs import make

SECRET = "tok-91c2e7-step-secret"

TASKS = [
    {"id": "fetch", "type": "noop"},
    {"id": "shape", "type": "python", "depends_on": ["fetch"],
     "with": {"callable": "tests.support.callables:chatty",
              "kwargs": {"lines": "{{ tasks.fetch.output.n + params.extra }}",
                         "secret": "{{ secrets.api_token }}"}}},
    {"id": "gate", "type": "noop", "when": "{{ params.extra > 5 }}"},
    {"id": "each", "type": "transform", "for_each": "{{ tasks.fetch.output.rows }}",
     "with": {"value": "{{ item * 10 }}"}},
    {"id": "ask", "type": "approval", "depends_on": ["shape"], "with": {"message": "ok?"}},
    {"id": "boom", "type": "python",
     "with": {"callable": "tests.support.callables:chatty",
              "kwargs": {"lines": 1, "fail": True}}},
]
PARAMS = {"extra": {"type": "integer", "default": 1}}


@pytest.fixture()
def worker(processes: Any) -> None:
    processes("worker")


def _test(client: FlaskClient, headers: dict[str, str], wid: str, task_id: str,
          body: dict[str, Any] | None = None) -> Any:
    return client.post(f"/api/v1/workflows/{wid}/tasks/{task_id}/test", headers=headers,
                       json=body if body is not None else {})


def _runs(app: Flask) -> int:
    with app.app_context():
        count = db.session.execute(select(func.count()).select_from(Run)).scalar()
        db.session.remove()
    return int(count or 0)


def test_a_step_runs_on_a_worker_with_the_given_scope_and_makes_no_run(
        app: Flask, client: FlaskClient, op: dict[str, Any], worker: None) -> None:
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config, secrets.SecretIn(
            team=op["team"]["name"], name="api_token", value=SECRET))
        db.session.remove()
    wid = make(client, op, TASKS, params=PARAMS)
    before = _runs(app)
    r = _test(client, op["h"], wid, "shape", {
        "params": {"extra": 2}, "upstream": {"fetch": {"output": {"n": 1}}}})
    assert r.status_code == 200, r.get_json()
    got = r.get_json()["result"]
    assert got["status"] == "succeeded" and got["output"] == {"lines": 3}
    assert got["error"] is None and got["took_ms"] > 0
    assert [line["message"] for line in got["logs"]] == [
        "connecting with ***", "line 1: slow answer", "line 2"]
    assert SECRET not in r.get_data(as_text=True)
    assert _runs(app) == before  # no run, no attempt

    # The params' defaults apply; `when` and `for_each` are evaluated as a run would.
    got = _test(client, op["h"], wid, "gate").get_json()["result"]
    assert got["status"] == "skipped" and got["logs"][0]["message"].startswith("when is false")
    got = _test(client, op["h"], wid, "each",
                {"upstream": {"fetch": {"output": {"rows": [4, 5, 6]}}}}).get_json()["result"]
    assert got["status"] == "succeeded" and got["output"] == 40
    assert "3 elements; tested with the first" in got["logs"][0]["message"]
    got = _test(client, op["h"], wid, "each", {"item": 7}).get_json()["result"]
    assert got["output"] == 70

    failed = _test(client, op["h"], wid, "boom").get_json()["result"]
    assert failed["status"] == "failed" and failed["retriable"] is True
    assert "RuntimeError: chatty failed on purpose" in failed["error"]

    with app.app_context():
        events = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "test_step",
                                     AuditEvent.target_id == wid)
            .order_by(AuditEvent.seq)).scalars().all()
        assert [e.after["task_id"] for e in events] == ["shape", "gate", "each", "each", "boom"]
        assert events[0].after["status"] == "succeeded" and events[-1].after["status"] == "failed"
        assert SECRET not in str([e.after for e in events])
        db.session.remove()


def test_a_step_uses_its_team_s_connections(
        app: Flask, client: FlaskClient, op: dict[str, Any], worker: None) -> None:
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    name = f"{unique('step')}.db"
    with sqlite3.connect(files / name) as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (41)")
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "local", "type": "sqlite", "config": {"path": name}})
    assert r.status_code == 201, r.get_json()
    wid = make(client, op, [
        {"id": "q", "type": "sql", "with": {"connection": "local",
                                            "query": "SELECT v + :d AS v FROM t",
                                            "params": {"d": "{{ params.d }}"}}},
        {"id": "other", "type": "sql", "with": {"connection": "nope", "query": "SELECT 1"}}],
        params={"d": {"type": "integer", "required": True}})
    got = _test(client, op["h"], wid, "q", {"params": {"d": 1}}).get_json()["result"]
    assert got["status"] == "succeeded", got
    assert got["output"]["rows"] == [{"v": 42}]
    assert any("1 rows" in line["message"] for line in got["logs"])
    other = _test(client, op["h"], wid, "other", {"params": {"d": 0}}).get_json()["result"]
    assert other["status"] == "failed" and other["error"] == "unknown connection 'nope'"


def test_bad_scopes_are_422_and_other_teams_404_and_only_authors_test(
        app: Flask, client: FlaskClient, op: dict[str, Any], factory: Any) -> None:
    wid = make(client, op, TASKS, params={"extra": {"type": "integer", "required": True}})
    r = _test(client, op["h"], wid, "shape", {"params": {}, "upstream": {"nope": {"output": 1}}})
    assert r.status_code == 422
    paths = {e["path"] for e in r.get_json()["errors"]}
    assert paths == {"upstream.nope", "params.extra"}, r.get_json()
    r = _test(client, op["h"], wid, "shape", {"params": {"extra": 1}, "surprise": 1})
    assert r.status_code == 422
    r = _test(client, op["h"], wid, "ask", {"params": {"extra": 1}})
    assert r.status_code == 422 and "needs a run" in r.get_json()["errors"][0]["message"]
    assert _test(client, op["h"], wid, "missing", {"params": {"extra": 1}}).status_code == 404
    operator = factory.user("Operator", teams=[op["team"]])
    oh = auth(api_token(client, operator["username"]))
    assert _test(client, oh, wid, "shape", {"params": {"extra": 1}}).status_code == 403
    other = factory.user("Author", teams=[factory.team()])
    ah = auth(api_token(client, other["username"]))
    assert _test(client, ah, wid, "shape", {"params": {"extra": 1}}).status_code == 404
    with app.app_context():
        refused = db.session.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "test_step", AuditEvent.outcome != "success",
            AuditEvent.target_id == wid)).scalar()
        denied = db.session.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "access", AuditEvent.outcome == "denied",
            AuditEvent.target_id == f"/api/v1/workflows/{wid}/tasks/shape/test")).scalar()
        db.session.remove()
    # Every refusal of a person's act is kept: the service's (422, 404) and the role
    # check's (the Operator's 403, by the request hook).
    assert (refused, denied) == (5, 1)


def test_without_a_worker_the_caller_is_told_so(
        app: Flask, client: FlaskClient, op: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "ANSWER_MARGIN", 0.0)
    wid = make(client, op, [{"id": "a", "type": "noop", "timeout": "1s", "queue": "low"}])
    r = _test(client, op["h"], wid, "a")
    assert r.status_code == 504, r.get_json()
    assert "is a worker serving queue 'low'" in r.get_json()["message"]
