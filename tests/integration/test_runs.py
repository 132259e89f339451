"""Runs on a real RQ worker: dependencies, trigger rules, skips, retries, timeouts,
delays, templates, idempotency, max_active_runs, exactly-once completion."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug import Response

from app.extensions import db
from capability.engine import jobs, runner, state
from capability.engine.dispatch import dispatcher_for
from capability.models import Run, TaskAttempt, TaskRun
from tests.support.app import api_token, auth, unique
from tests.support.driver import Fifo, unit
from tests.support.engine import drain, work_once
from tests.support.runs import get_run, make, run_to_end, start, start_id


def test_chain_passes_outputs_through_templates(app, client, op):
    wid = make(client, op, [
        {"id": "a", "type": "noop", "with": {"value": "{{ params.n * 2 }}"}},
        {"id": "b", "type": "transform", "depends_on": ["a"],
         "with": {"value": {"doubled": "{{ tasks.a.output }}", "text": "n={{ params.n }}"}}},
        {"id": "c", "type": "python", "depends_on": ["b"],
         "with": {"callable": "tests.support.callables:add",
                  "kwargs": {"a": "{{ tasks.b.output.doubled }}", "b": 1}}},
    ], params={"n": {"type": "integer", "required": True}})
    r = start(client, op, wid, params={"n": 21})
    assert r.status_code == 201, r.get_json()
    assert drain(app, r.get_json()["id"]) == "succeeded"
    got = client.get(f"/api/v1/runs/{r.get_json()['id']}", headers=op["h"]).get_json()["result"]
    by = {t["task_id"]: t for t in got["tasks"]}
    assert by["a"]["output"] == 42
    assert by["b"]["output"] == {"doubled": 42, "text": "n=21"}
    assert by["c"]["output"] == 43
    assert [t["task_id"] for t in got["tasks"]] == ["a", "b", "c"]
    assert got["started_at"] and got["finished_at"] and got["params"] == {"n": 21}


def test_failure_marks_downstream_and_all_done_still_runs(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "boom", "type": "fail", "with": {"message": "nope"}},
        {"id": "after", "type": "noop", "depends_on": ["boom"]},
        {"id": "after2", "type": "noop", "depends_on": ["after"]},
        {"id": "notify", "type": "noop", "depends_on": ["boom"], "trigger_rule": "all_done",
         "when": "{{ tasks.boom.status == 'failed' }}"},
        {"id": "on_fail", "type": "noop", "depends_on": ["boom"], "trigger_rule": "one_failed"},
        {"id": "on_ok", "type": "noop", "depends_on": ["notify"], "trigger_rule": "one_success"},
    ])
    by = run["by_task"]
    assert run["status"] == "failed"
    assert by["boom"]["status"] == "failed" and by["boom"]["error"] == "nope"
    assert by["after"]["status"] == "upstream_failed"
    assert by["after2"]["status"] == "upstream_failed"
    assert by["notify"]["status"] == "succeeded"
    assert by["on_fail"]["status"] == "succeeded"
    assert by["on_ok"]["status"] == "succeeded"


def test_when_false_skips_and_skips_propagate(app, client, op):
    wid = make(client, op, [
        {"id": "gate", "type": "noop", "when": "{{ params.go }}"},
        {"id": "next", "type": "noop", "depends_on": ["gate"]},
        {"id": "tolerant", "type": "noop", "depends_on": ["gate"], "trigger_rule": "none_failed"},
        {"id": "wants_failure", "type": "noop", "depends_on": ["gate"],
         "trigger_rule": "all_failed"},
    ], params={"go": {"type": "boolean", "default": False}})
    r = start(client, op, wid)
    assert drain(app, r.get_json()["id"]) == "succeeded"
    by = {t["task_id"]: t for t in client.get(
        f"/api/v1/runs/{r.get_json()['id']}", headers=op["h"]).get_json()["result"]["tasks"]}
    assert by["gate"]["status"] == "skipped" and by["gate"]["attempts"] == 0
    assert by["next"]["status"] == "skipped"
    assert by["tolerant"]["status"] == "succeeded"
    assert by["wants_failure"]["status"] == "skipped"


def test_retries_back_off_through_the_scheduled_registry(app, client, op):
    key = unique("flaky")
    run = run_to_end(app, client, op, [
        {"id": "flaky", "type": "python",
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": key, "fail_times": 2}},
         "retry": {"max_attempts": 3, "backoff": "exponential", "delay": "200ms",
                   "jitter": False}},
    ])
    task = run["by_task"]["flaky"]
    assert run["status"] == "succeeded" and task["attempts"] == 3
    history = task["attempt_history"]
    assert [a["status"] for a in history] == ["failed", "failed", "succeeded"]
    assert "flaky failure 1" in history[0]["error"]
    # The second wait doubles the first (exponential backoff, no jitter).
    with app.app_context():
        rows = db.session.execute(select(TaskAttempt).where(
            TaskAttempt.id.in_([a["id"] for a in history])).order_by(TaskAttempt.number)
        ).scalars().all()
        gap1 = (rows[1].not_before - rows[0].finished_at).total_seconds()
        gap2 = (rows[2].not_before - rows[1].finished_at).total_seconds()
    assert 0.15 < gap1 < 0.3 and 0.35 < gap2 < 0.5


def test_retries_exhausted_fail_the_task(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "always", "type": "fail", "with": {"message": "still broken"},
         "retry": {"max_attempts": 2, "delay": "50ms", "jitter": False}},
    ])
    task = run["by_task"]["always"]
    assert run["status"] == "failed" and task["attempts"] == 2 and task["status"] == "failed"


def test_timeout_fails_the_attempt_and_is_retried(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "slow", "type": "python", "timeout": "1s",
         "with": {"callable": "tests.support.callables:sleep", "kwargs": {"seconds": 5}},
         "retry": {"max_attempts": 2, "delay": "50ms", "jitter": False}},
    ])
    task = run["by_task"]["slow"]
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "timed out after 1s" in task["error"]


def test_expression_failure_names_the_field_and_is_not_retried(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "a", "type": "noop", "with": {"value": {"k": 1}}},
        {"id": "b", "type": "noop", "depends_on": ["a"],
         "with": {"value": "{{ tasks.a.output.missing }}"},
         "retry": {"max_attempts": 3, "delay": "50ms"}},
    ])
    task = run["by_task"]["b"]
    assert task["status"] == "failed" and task["attempts"] == 1
    assert task["error"].startswith("with.value")


def test_python_callable_outside_allowed_prefixes_fails(app, client, op, monkeypatch):
    monkeypatch.setitem(app.config, "PYTHON_TASK_PREFIXES", [])  # the web does not check
    wid = make(client, op, [
        {"id": "p", "type": "python", "with": {"callable": "os:getcwd"},
         "retry": {"max_attempts": 3, "delay": "50ms"}},
    ])
    monkeypatch.setitem(app.config, "PYTHON_TASK_PREFIXES", ["tests.support.callables"])
    run_id = start_id(client, op, wid)
    drain(app, run_id)
    task = get_run(client, op, run_id)["by_task"]["p"]
    assert task["status"] == "failed" and task["attempts"] == 1
    assert "not under an allowed prefix" in task["error"]


def test_http_task_output_retries_and_statuses(app, client, op, httpserver):
    from werkzeug import Response

    calls = []

    def flaky(request):  # first call busy, then fine
        calls.append(request.headers.get("Idempotency-Key"))
        if len(calls) == 1:
            return Response("busy", status=503)
        return Response('{"ok": true}', content_type="application/json")

    httpserver.expect_request("/flaky").respond_with_handler(flaky)
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    run = run_to_end(app, client, op, [
        {"id": "get", "type": "http", "with": {"url": httpserver.url_for("/flaky")},
         "retry": {"max_attempts": 3, "delay": "50ms", "jitter": False}},
        {"id": "gone", "type": "http", "with": {"url": httpserver.url_for("/missing")},
         "retry": {"max_attempts": 3, "delay": "50ms"}},
    ])
    got = run["by_task"]["get"]
    assert got["status"] == "succeeded" and got["attempts"] == 2
    assert got["output"]["status"] == 200 and got["output"]["json"] == {"ok": True}
    # Each attempt carries its own idempotency key (its attempt id).
    assert calls == [a["id"] for a in got["attempt_history"]]
    gone = run["by_task"]["gone"]
    assert gone["status"] == "failed" and gone["attempts"] == 1
    assert "HTTP 404" in gone["error"]


def test_delay_waits_without_holding_a_worker(app, client, op):
    wid = make(client, op, [
        {"id": "wait", "type": "delay", "with": {"seconds": 1}},
        {"id": "then", "type": "noop", "depends_on": ["wait"]},
    ])
    r = start(client, op, wid)
    t0 = time.monotonic()
    assert drain(app, r.get_json()["id"]) == "succeeded"
    assert time.monotonic() - t0 >= 0.9
    with app.app_context():
        wait = db.session.execute(select(TaskRun).where(
            TaskRun.run_id == r.get_json()["id"], TaskRun.task_id == "wait")).scalar_one()
        assert (wait.finished_at - wait.started_at).total_seconds() >= 0.9


def test_idempotency_key_returns_the_same_run(app, client, op):
    wid = make(client, op, [{"id": "a", "type": "noop"}])
    first = start(client, op, wid, idempotency_key="order-42")
    again = start(client, op, wid, idempotency_key="order-42")
    assert first.status_code == 201 and again.status_code == 200
    assert first.get_json()["id"] == again.get_json()["id"]


def test_bad_params_create_no_run(app, client, op):
    wid = make(client, op, [{"id": "a", "type": "noop"}],
               params={"n": {"type": "integer", "required": True}})
    with app.app_context():
        before = db.session.execute(select(func.count()).select_from(Run)).scalar()
    r = start(client, op, wid, params={"n": "many", "extra": 1})
    assert r.status_code == 422
    assert {e["path"] for e in r.get_json()["errors"]} == {"params.n", "params.extra"}
    r = start(client, op, wid, params={})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "params.n"
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Run)).scalar() == before


def test_a_run_is_queued_until_a_worker_begins_it_and_max_active_runs_holds_the_rest(
        app, client, op):
    """API.md: a started run answers ``queued``. The first run takes the only slot (its
    task waits for a worker), the second waits for the slot with nothing sent; a run is
    ``running`` from the moment a worker begins its first task."""
    wid = make(client, op, [{"id": "a", "type": "delay", "with": {"seconds": 0.5}}],
               max_active_runs=1)
    one = start(client, op, wid).get_json()
    two = start(client, op, wid).get_json()
    three = start(client, op, wid).get_json()
    assert [r["result"]["status"] for r in (one, two, three)] == ["queued"] * 3
    assert one["result"]["started_at"] is None

    def state(run: dict[str, Any]) -> tuple[str, str, bool]:
        got = client.get(f"/api/v1/runs/{run['id']}", headers=op["h"]).get_json()["result"]
        return got["status"], got["tasks"][0]["status"], got["started_at"] is not None

    assert state(one) == ("queued", "queued", False)
    assert state(two) == state(three) == ("queued", "pending", False)
    # Waiting for a slot, a run holds nothing to pause; it can still be cancelled.
    r = client.post(f"/api/v1/runs/{two['id']}/pause", headers=op["h"])
    assert r.status_code == 409 and "waiting for a slot" in r.get_json()["message"]
    # Paused and resumed before any task began: queued again, its task sent again.
    assert client.post(f"/api/v1/runs/{one['id']}/pause", headers=op["h"]).status_code == 200
    assert state(one)[0] == "paused"
    assert client.post(f"/api/v1/runs/{one['id']}/resume", headers=op["h"]).status_code == 200
    assert state(one) == ("queued", "queued", False)
    work_once(app)  # begins the delay of run one; the others still wait for the slot
    assert state(one) == ("running", "running", True)
    assert state(two) == ("queued", "pending", False)
    assert drain(app, one["id"]) == "succeeded"
    assert state(two)[1] != "pending"  # promoted when one ended: it holds the slot now
    assert state(three) == ("queued", "pending", False)
    assert drain(app, two["id"]) == "succeeded"
    assert drain(app, three["id"]) == "succeeded"


def test_a_completion_is_recorded_once(app, client, op):
    wid = make(client, op, [{"id": "a", "type": "noop", "with": {"value": 1}}])
    run_id = start(client, op, wid).get_json()["id"]
    fifo = Fifo()
    with app.app_context():
        attempt = db.session.execute(select(TaskAttempt).join(TaskRun).where(
            TaskRun.run_id == run_id)).scalar_one()
        with unit(db.session, fifo):
            ctx = runner.begin_attempt(db.session, attempt.id, "test", exclusive=True)
        assert isinstance(ctx, runner.AttemptContext)
        with unit(db.session, fifo):
            assert runner.begin_attempt(db.session, attempt.id, "dup") is None
        recorded = []
        for outcome in (runner.Outcome.success("first"), runner.Outcome.success("second"),
                        runner.Outcome.failure("late")):
            with unit(db.session, fifo):
                recorded.append(runner.complete_attempt(db.session, attempt.id, outcome))
        assert recorded == [True, False, False]
        task = db.session.execute(select(TaskRun).where(TaskRun.run_id == run_id)).scalar_one()
        assert (task.status, task.output, task.attempts) == ("succeeded", "first", 1)
        assert db.session.get(Run, run_id).status == "succeeded"
        db.session.remove()


def test_real_worker_and_scheduler_processes_finish_a_run(app, client, op):
    """`flask worker` (forking AppWorker) and `flask scheduler` as separate processes."""
    import os
    import subprocess
    import sys

    key = unique("proc")
    wid = make(client, op, [
        {"id": "first", "type": "noop", "with": {"value": "x"}},
        {"id": "flaky", "type": "python", "depends_on": ["first"],
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": key, "fail_times": 1}},
         "retry": {"max_attempts": 2, "delay": "1s", "jitter": False}},
        {"id": "pause", "type": "delay", "depends_on": ["flaky"], "with": {"seconds": 1}},
    ])
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "APG_SYNC_SECURITY": "0",
           "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"], "SECRET_KEY": app.config["SECRET_KEY"],
           "PYTHON_TASK_PREFIXES": "tests.support.callables",
           "EGRESS_ALLOW": app.config["EGRESS_ALLOW"]}
    procs = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", cmd], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for cmd in ("worker", "scheduler")]
    try:
        run_id = start(client, op, wid).get_json()["id"]
        deadline = time.monotonic() + 60
        status = "queued"
        while time.monotonic() < deadline:
            status = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
            if status["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        assert status["status"] == "succeeded", status
        by = {t["task_id"]: t for t in status["tasks"]}
        assert by["flaky"]["attempts"] == 2
        assert all(a["worker"] for a in by["flaky"]["attempt_history"])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _events(app, run_id: str) -> list[str]:
    from app.audit.models import AuditEvent

    with app.app_context():
        return list(db.session.execute(
            select(AuditEvent.action).where(AuditEvent.target_id == run_id,
                                            AuditEvent.outcome == "success")
            .order_by(AuditEvent.seq)).scalars())


def test_templated_approvers_are_rendered(app, client, op, factory):
    """``with.approvers`` is a template like the rest of ``with``: the role it renders to
    answers, the others are refused (403); the Admin always may."""
    wid = make(client, op, [
        {"id": "first", "type": "noop", "with": {"value": "Operator"}},
        {"id": "ask", "type": "approval", "depends_on": ["first"],
         "with": {"message": "ship it?", "approvers": "{{ tasks.first.output }}"}},
    ])
    run_id = start(client, op, wid).get_json()["id"]
    work_once(app)
    operator = auth(api_token(client, factory.user("Operator", teams=[op["team"]])["username"]))
    url = f"/api/v1/runs/{run_id}/tasks/ask/approve"
    r = client.post(url, json={"comment": "me"}, headers=op["h"])  # an Author
    assert r.status_code == 403 and "'Operator'" in r.get_json()["message"]
    assert client.post(url, json={"comment": "ok"}, headers=operator).status_code == 200
    assert drain(app, run_id) == "succeeded"


def test_approval_waits_then_approve_and_reject(app, client, op):
    wid = make(client, op, [
        {"id": "ask", "type": "approval", "with": {"message": "ship it?"}},
        {"id": "ship", "type": "noop", "depends_on": ["ask"],
         "with": {"value": "{{ tasks.ask.output.approved_by }}"}},
    ])
    run_id = start(client, op, wid).get_json()["id"]
    for _ in range(3):  # nothing to do until someone answers
        work_once(app)
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert {t["task_id"]: t["status"] for t in got["tasks"]}["ask"] == "waiting_approval"
    r = client.post(f"/api/v1/runs/{run_id}/tasks/ship/approve", json={}, headers=op["h"])
    assert r.status_code == 409
    r = client.post(f"/api/v1/runs/{run_id}/tasks/ask/approve", json={"comment": "go"},
                    headers=op["h"])
    assert r.status_code == 200, r.get_json()
    assert drain(app, run_id) == "succeeded"
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    by = {t["task_id"]: t for t in got["tasks"]}
    assert by["ask"]["output"]["comment"] == "go"
    assert by["ship"]["output"] == by["ask"]["output"]["approved_by"]
    assert _events(app, run_id) == ["start", "approve"]

    run2 = start(client, op, wid).get_json()["id"]
    work_once(app)
    r = client.post(f"/api/v1/runs/{run2}/tasks/ask/reject", json={"comment": "no"},
                    headers=op["h"])
    assert r.status_code == 200
    assert drain(app, run2) == "failed"
    by = {t["task_id"]: t for t in client.get(
        f"/api/v1/runs/{run2}", headers=op["h"]).get_json()["result"]["tasks"]}
    assert by["ask"]["status"] == "failed" and "rejected by" in by["ask"]["error"]
    assert by["ship"]["status"] == "upstream_failed"


def test_pause_resume_cancel_and_retry(app, client, op):
    wid = make(client, op, [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "fail", "depends_on": ["a"], "with": {"message": "x"}},
    ])
    run_id = start(client, op, wid).get_json()["id"]
    assert client.post(f"/api/v1/runs/{run_id}/pause", headers=op["h"]).status_code == 200
    assert client.post(f"/api/v1/runs/{run_id}/pause", headers=op["h"]).status_code == 409
    work_once(app)
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert got["status"] == "paused" and got["tasks"][0]["status"] == "queued"
    assert client.post(f"/api/v1/runs/{run_id}/resume", headers=op["h"]).status_code == 200
    assert drain(app, run_id) == "failed"
    assert client.post(f"/api/v1/runs/{run_id}/retry", headers=op["h"]).status_code == 200
    assert drain(app, run_id) == "failed"
    by = {t["task_id"]: t for t in client.get(
        f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]["tasks"]}
    assert by["b"]["attempts"] == 2 and by["a"]["attempts"] == 1

    run2 = start(client, op, wid).get_json()["id"]
    r = client.post(f"/api/v1/runs/{run2}/cancel", headers=op["h"])
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "cancelled"
    assert {t["status"] for t in r.get_json()["result"]["tasks"]} == {"cancelled"}
    assert client.post(f"/api/v1/runs/{run2}/cancel", headers=op["h"]).status_code == 409
    assert _events(app, run_id) == ["start", "pause", "resume", "retry"]
    assert _events(app, run2) == ["start", "cancel"]


def test_a_retry_waits_for_a_max_active_runs_slot(app, client, op):
    """Retrying a failed run while the workflow's only slot is taken: the run is queued
    with nothing sent (a plain task back to pending, a for_each task's failed elements
    too); when the slot frees it runs, elements included."""
    flaky = {"callable": "tests.support.callables:flaky", "kwargs": {"fail_times": 1}}
    wid = make(client, op, [
        {"id": "plain", "type": "python",
         "with": {**flaky, "kwargs": {**flaky["kwargs"], "key": "{{ params.key }}-plain"}}},
        # Only the first element fails, once (the task fails at that failure).
        {"id": "each", "type": "python", "for_each": "{{ [1, 2] }}",
         "with": {**flaky, "kwargs": {"key": "{{ params.key }}-{{ item }}",
                                      "fail_times": "{{ 1 if item == 1 else 0 }}"}}},
    ], max_active_runs=1, params={"key": {"type": "string", "required": True}})
    first = start(client, op, wid, params={"key": unique("a")}).get_json()["id"]
    assert drain(app, first) == "failed"
    second = start(client, op, wid, params={"key": unique("b")}).get_json()["id"]  # the slot

    r = client.post(f"/api/v1/runs/{first}/retry", headers=op["h"])
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "queued"
    with app.app_context():  # it holds no slot: nothing of it waits for a worker
        assert state.admitted(db.session, first) is False
        assert state.admitted(db.session, second) is True
        db.session.remove()
    tasks = {t["task_id"]: t["status"] for t in r.get_json()["result"]["tasks"]}
    assert tasks == {"plain": "pending", "each": "running"}
    assert drain(app, second) == "failed"  # its end gives the slot to the retried run
    status = drain(app, first)
    got = client.get(f"/api/v1/runs/{first}", headers=op["h"]).get_json()["result"]
    by = {t["task_id"]: t for t in got["tasks"]}
    assert status == "succeeded", by
    assert by["each"]["output"] == [{"calls": 2}, {"calls": 1}]
    assert by["plain"]["attempts"] == 2


def test_backoff_after_a_manual_retry_starts_again(app, client, op):
    """The retry budget and the exponential wait both count from the last manual retry."""
    key = unique("backoff")
    wid = make(client, op, [
        {"id": "flaky", "type": "python",
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": key, "fail_times": 3}},
         "retry": {"max_attempts": 2, "backoff": "exponential", "delay": "200ms",
                   "jitter": False}},
    ])
    run_id = start(client, op, wid).get_json()["id"]
    assert drain(app, run_id) == "failed"
    assert client.post(f"/api/v1/runs/{run_id}/retry", headers=op["h"]).status_code == 200
    assert drain(app, run_id) == "succeeded"
    with app.app_context():
        rows = db.session.execute(select(TaskAttempt).join(TaskRun).where(
            TaskRun.run_id == run_id).order_by(TaskAttempt.number)).scalars().all()
        db.session.remove()
    assert [a.status for a in rows] == ["failed", "failed", "failed", "succeeded"]
    gap = (rows[3].not_before - rows[2].finished_at).total_seconds()
    assert 0.15 < gap < 0.3, gap  # the first wait again, not 200ms * 2**2


@pytest.mark.parametrize("kind", ["python", "http"])
def test_cancel_stops_a_running_attempt_on_a_real_worker(app, client, op, httpserver, kind):
    """A `python` task runs in a child process (killed); any other task runs in the
    worker itself, interrupted inside a blocking read."""
    import os
    import subprocess
    import sys
    import threading

    released = threading.Event()

    def slow(request: Any) -> Response:
        released.wait(30)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    task = {"id": "long", "type": "python",
            "with": {"callable": "tests.support.callables:sleep", "kwargs": {"seconds": 30}}}
    if kind == "http":
        task = {"id": "long", "type": "http", "with": {"url": httpserver.url_for("/slow")}}
    wid = make(client, op, [task])
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "APG_SYNC_SECURITY": "0",
           "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"], "SECRET_KEY": app.config["SECRET_KEY"],
           "PYTHON_TASK_PREFIXES": "tests.support.callables",
           "EGRESS_ALLOW": app.config["EGRESS_ALLOW"]}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_id = start(client, op, wid).get_json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            task = client.get(f"/api/v1/runs/{run_id}",
                              headers=op["h"]).get_json()["result"]["tasks"][0]
            if task["status"] == "running":
                break
            time.sleep(0.1)
        assert task["status"] == "running"
        t0 = time.monotonic()
        r = client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"])
        assert r.status_code == 200
        from rq import Worker

        from app.runtime.redis_conn import get_redis

        # The worker is free again well before the 30 s sleep would have ended.
        while time.monotonic() - t0 < 15:
            workers = Worker.all(connection=get_redis(app))
            if workers and all(w.get_current_job_id() is None for w in workers):
                break
            time.sleep(0.2)
        assert time.monotonic() - t0 < 15
        got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
        assert got["status"] == "cancelled"
        assert got["tasks"][0]["attempt_history"][0]["status"] == "cancelled"
    finally:
        released.set()
        proc.terminate()
        proc.wait(timeout=30)


def test_for_each_runs_every_element_in_order_with_max_parallel(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "list", "type": "noop", "with": {"value": [3, 1, 2, 5]}},
        {"id": "double", "type": "python", "depends_on": ["list"],
         "for_each": "{{ tasks.list.output }}", "max_parallel": 2,
         "with": {"callable": "tests.support.callables:add",
                  "kwargs": {"a": "{{ item }}", "b": "{{ index * 100 }}"}}},
        {"id": "sum", "type": "transform", "depends_on": ["double"],
         "with": {"value": "{{ tasks.double.output | sum }}"}},
    ])
    by = run["by_task"]
    assert run["status"] == "succeeded"
    assert by["double"]["output"] == [3, 101, 202, 305]
    assert [i["index"] for i in by["double"]["items"]] == [0, 1, 2, 3]
    assert by["double"]["attempts"] == 4
    assert by["sum"]["output"] == 611


def test_for_each_respects_max_parallel(app, client, op):
    wid = make(client, op, [
        {"id": "fan", "type": "noop", "for_each": [1, 2, 3, 4, 5], "max_parallel": 2,
         "with": {"value": "{{ item }}"}},
    ])
    run_id = start(client, op, wid).get_json()["id"]

    def attempts() -> list[str]:
        with app.app_context():
            made = list(db.session.execute(
                select(TaskAttempt.status).join(TaskRun).where(TaskRun.run_id == run_id)
            ).scalars())
            db.session.remove()
        return made

    assert attempts() == ["queued"]  # the job that makes the elements (on a worker)
    with app.app_context():
        expand = db.session.execute(select(TaskAttempt.id).join(TaskRun).where(
            TaskRun.run_id == run_id)).scalar_one()
        fifo = Fifo()
        # The elements are made and sent like what any record makes ready (a job may go
        # on with one of them: the outbox comes back committed, not yet delivered).
        box = jobs.run_one(db.session, fifo, expand, True, "test")
        assert box is not None
        box.deliver()
        db.session.remove()
    assert attempts() == ["queued", "queued"]  # only two elements are handed out at first
    assert len(fifo.items) == 2
    with app.app_context():
        dispatcher_for(app).send(list(fifo.items))
    assert drain(app, run_id) == "succeeded"


def test_for_each_element_failure_fails_the_task_and_retry_reruns_it(app, client, op):
    key = unique("each")
    run = run_to_end(app, client, op, [
        {"id": "each", "type": "python", "for_each": ["a", "b"],
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": "{{ '" + key + "' ~ item }}", "fail_times": 2}},
         "retry": {"max_attempts": 2, "delay": "50ms", "jitter": False}},
        {"id": "after", "type": "noop", "depends_on": ["each"]},
    ])
    assert run["status"] == "failed"
    each = run["by_task"]["each"]
    assert each["status"] == "failed" and each["error"].startswith("item ")
    assert run["by_task"]["after"]["status"] == "upstream_failed"
    r = client.post(f"/api/v1/runs/{run['id']}/retry", headers=op["h"])
    assert r.status_code == 200, r.get_json()
    assert drain(app, run["id"]) == "succeeded"
    got = client.get(f"/api/v1/runs/{run['id']}", headers=op["h"]).get_json()["result"]
    each = {t["task_id"]: t for t in got["tasks"]}["each"]
    # Every element got a fresh retry budget; each succeeded on its third call.
    assert [o["calls"] for o in each["output"]] == [3, 3]
    assert [i["status"] for i in each["items"]] == ["succeeded", "succeeded"]


def test_for_each_empty_list_succeeds_with_empty_output(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "none", "type": "noop", "for_each": "{{ [] }}", "with": {"value": "{{ item }}"}},
    ])
    assert run["status"] == "succeeded" and run["by_task"]["none"]["output"] == []


def test_compensation_undoes_succeeded_tasks_in_reverse_order(app, client, op, httpserver):
    from werkzeug import Response

    undone: list[str] = []

    def record(request):
        undone.append(request.path)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/undo/first").respond_with_handler(record)
    httpserver.expect_request("/undo/second").respond_with_handler(record)
    httpserver.expect_request("/undo/each").respond_with_handler(record)
    base = httpserver.url_for("/undo")
    run = run_to_end(app, client, op, [
        {"id": "first", "type": "noop",
         "compensate": {"type": "http", "with": {"method": "DELETE", "url": base + "/first"}}},
        {"id": "second", "type": "noop", "depends_on": ["first"],
         "compensate": {"type": "http", "with": {"method": "DELETE", "url": base + "/second"}}},
        {"id": "each", "type": "noop", "depends_on": ["second"], "for_each": [1, 2],
         "with": {"value": "{{ item }}"},
         "compensate": {"type": "http",
                        "with": {"method": "POST", "url": base + "/each", "json": "{{ item }}"}}},
        {"id": "no_undo", "type": "noop", "depends_on": ["each"], "with": {"value": 7},
         "compensate": {"type": "noop", "with": {"value": "{{ tasks.no_undo.output }}"}}},
        {"id": "boom", "type": "fail", "depends_on": ["no_undo"], "with": {"message": "bad"}},
    ])
    assert run["status"] == "failed"
    assert undone == ["/undo/each", "/undo/each", "/undo/second", "/undo/first"]
    comps = run["compensations"]
    assert [c["task_id"] for c in comps] == ["no_undo", "each", "second", "first"]
    # An undo step sees the output of the task it undoes.
    assert comps[0]["output"] == 7
    comps = comps[1:]
    assert all(c["status"] == "succeeded" for c in comps)
    assert [i["output"]["status"] for i in comps[0]["items"]] == [200, 200]
    r = client.post(f"/api/v1/runs/{run['id']}/retry", headers=op["h"])
    assert r.status_code == 409


def _named(client, op, name: str, tasks, **extra) -> str:
    r = client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"], "definition": {"name": name, "tasks": tasks, **extra}})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def test_sub_workflow_output_failure_and_nesting_limit(app, client, op):
    child = unique("child")
    _named(client, op, child, [
        {"id": "greet", "type": "noop", "with": {"value": "hi {{ params.who }}"}},
    ], params={"who": {"type": "string", "required": True}})
    elsewhere = unique("elsewhere")
    _named(client, op, elsewhere, [{"id": "x", "type": "noop", "queue": "nowhere"}])
    run = run_to_end(app, client, op, [
        {"id": "offqueue", "type": "workflow", "with": {"workflow": elsewhere}},
        {"id": "sub", "type": "workflow", "with": {"workflow": child, "params": {"who": "bob"}}},
        {"id": "use", "type": "noop", "depends_on": ["sub"],
         "with": {"value": "{{ tasks.sub.output.greet }}"}},
        {"id": "missing", "type": "workflow", "with": {"workflow": "no-such-flow"}},
        {"id": "badparams", "type": "workflow", "with": {"workflow": child, "params": {}}},
    ])
    by = run["by_task"]
    assert by["sub"]["status"] == "succeeded" and by["sub"]["output"] == {"greet": "hi bob"}
    assert by["use"]["output"] == "hi bob"
    assert by["missing"]["status"] == "failed" and "no workflow named" in by["missing"]["error"]
    assert by["badparams"]["status"] == "failed" and "params.who" in by["badparams"]["error"]
    # A child on a queue no worker listens on would wait forever: the task fails at once.
    assert by["offqueue"]["status"] == "failed"
    assert "tasks[0].queue: no worker listens on queue 'nowhere'" in by["offqueue"]["error"]
    with app.app_context():
        kids = list(db.session.execute(
            select(Run).where(Run.parent_run_id == run["id"])).scalars())
        assert [(k.trigger, k.depth, k.status) for k in kids] == [("workflow", 1, "succeeded")]
        # The engine's start of the child run is audited like any run start.
        from app.audit.models import AuditEvent

        (event,) = db.session.execute(select(AuditEvent).where(
            AuditEvent.action == "start", AuditEvent.target_id == kids[0].id)).scalars()
        assert (event.actor, event.team, event.outcome) == ("system", op["team"]["name"],
                                                           "success")
        assert event.after["parent_run"] == run["id"] and event.after["parent_task"] == "sub"
        assert event.after["trigger"] == "workflow" and event.after["workflow"] == child
        db.session.remove()

    failing = unique("failing")
    _named(client, op, failing, [{"id": "x", "type": "fail", "with": {"message": "deep"}}])
    run = run_to_end(app, client, op, [
        {"id": "sub", "type": "workflow", "with": {"workflow": failing}},
    ])
    assert run["by_task"]["sub"]["status"] == "failed"
    assert "sub-workflow run" in run["by_task"]["sub"]["error"]

    loop = unique("loop")
    loop_id = _named(client, op, loop, [
        {"id": "again", "type": "workflow", "with": {"workflow": loop}},
    ])
    first = start(client, op, loop_id).get_json()["id"]
    assert drain(app, first, timeout=60) == "failed"
    with app.app_context():
        depths = sorted(db.session.execute(
            select(Run.depth).where(Run.workflow_id == loop_id)).scalars())
        deepest = db.session.execute(select(TaskRun.error).join(Run).where(
            Run.workflow_id == loop_id, Run.depth == 10)).scalar()
    assert depths == list(range(11))
    assert "deeper than 10" in deepest


def test_a_sub_workflow_s_end_reaches_its_parent_on_the_parent_task_s_queue(app, client, op):
    from rq import Queue

    from app.runtime.redis_conn import get_redis
    from tests.support.engine import AppSimpleWorker

    child = unique("child")
    _named(client, op, child, [{"id": "x", "type": "noop"}])
    wid = make(client, op, [
        {"id": "sub", "type": "workflow", "queue": "low", "with": {"workflow": child}}])
    conn = get_redis(app)
    low = Queue("low", connection=conn)
    low.empty()
    run_id = start(client, op, wid).get_json()["id"]
    # Only "low" first (the parent task), then only "default" (the child's task).
    for name in ("low", "default"):
        worker = AppSimpleWorker([Queue(name, connection=conn)], connection=conn)
        worker.flask_app = app
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    with app.app_context():
        (kid,) = db.session.execute(select(Run.id).where(Run.parent_run_id == run_id)).scalars()
        db.session.remove()
    assert low.job_ids == [f"apg-child-{kid}"]
    assert drain(app, run_id) == "succeeded"


def test_two_workers_racing_on_a_diamond_run_the_join_once(app, client, op):
    """50 runs of a -> (b, c) -> d on two worker processes: d is decided exactly once."""
    import os
    import subprocess
    import sys

    wid = make(client, op, [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop", "depends_on": ["a"]},
        {"id": "c", "type": "noop", "depends_on": ["a"]},
        {"id": "d", "type": "noop", "depends_on": ["b", "c"], "with": {"value": "joined"}},
    ])
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "APG_SYNC_SECURITY": "0",
           "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"], "SECRET_KEY": app.config["SECRET_KEY"]}
    procs = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    try:
        run_ids = [start(client, op, wid).get_json()["id"] for _ in range(50)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with app.app_context():
                left = db.session.execute(select(func.count()).select_from(Run).where(
                    Run.id.in_(run_ids), Run.status.notin_(["succeeded", "failed"]))).scalar()
                db.session.remove()
            if left == 0:
                break
            time.sleep(0.2)
        assert left == 0
        with app.app_context():
            rows = db.session.execute(
                select(TaskRun.run_id, func.count(TaskAttempt.id), func.min(Run.status))
                .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
                .join(Run, Run.id == TaskRun.run_id)
                .where(TaskRun.run_id.in_(run_ids), TaskRun.task_id == "d")
                .group_by(TaskRun.run_id)
            ).all()
            workers = set(db.session.execute(
                select(TaskAttempt.worker).join(TaskRun).where(TaskRun.run_id.in_(run_ids))
            ).scalars())
        assert len(rows) == 50
        assert all(count == 1 and status == "succeeded" for _, count, status in rows)
        assert len(workers) == 2  # both workers took part
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_a_queue_no_worker_listens_on_is_refused_at_start(client, op):
    wid = make(client, op, [{"id": "a", "type": "noop", "queue": "gpu"}])
    r = start(client, op, wid)
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{"path": "tasks[0].queue", "message":
                                       "no worker listens on queue 'gpu' "
                                       "(configured: high, default, low)"}]
