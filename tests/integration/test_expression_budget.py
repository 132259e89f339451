"""An expression's budget in the engine (issue 11, item 3): a `when` that would loop for
ever fails its task, not retried, naming the field, and it is evaluated while the
engine holds no transaction: the run's row stays free, so a cancel goes through at
once."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from rq import Worker
from sqlalchemy import text, update

from app.extensions import db
from app.runtime import interrupt
from app.runtime.redis_conn import get_redis
from capability import dsl
from capability.engine import foreach, state
from capability.engine.dispatch import dispatcher_for
from capability.engine.state import AttemptContext
from capability.models import Run, TaskRun
from tests.support.app import api_token, auth
from tests.support.engine import child_env, drain, spawned, work_once
from tests.support.runs import attempts, finished, make, start_id, wait_for

HUGE_LOOP = ("{% for i in range(100000) %}{% for j in range(100000) %}"
             "{% endfor %}{% endfor %}{{ true }}")
BUDGET = 5.0


@pytest.fixture()
def worker(app, tmp_path) -> Iterator[Callable[[], Any]]:
    """A worker process whose expressions have a budget of ``BUDGET`` seconds."""
    env = child_env(app, APG_SYNC_SECURITY="0", EXPRESSION_TIMEOUT=str(BUDGET))
    with spawned(tmp_path, [sys.executable, "-m", "app"], env) as spawn:
        spawn("worker")
        wait_for(lambda: Worker.all(connection=get_redis(app)), 30, "no worker registered")
        yield spawn


def _gated(client, op) -> str:
    return start_id(client, op, make(client, op, [
        # Not an instant type: its attempt is seen running before its completion.
        {"id": "a", "type": "python",
         "with": {"callable": "tests.support.callables:add", "kwargs": {"a": 1, "b": 2}}},
        {"id": "gate", "type": "noop", "depends_on": ["a"], "when": HUGE_LOOP,
         "retry": {"max_attempts": 3}},
    ]))


def _statuses(app, run_id: str, task_id: str) -> list[str]:
    return [a.status for a in attempts(app, run_id, task_id)]


def _evaluating(app, run_id: str) -> None:
    """Returns once the gate's `when` is being evaluated: its attempt is running (or,
    where `when` is evaluated inside the upstream's completion, that has begun)."""
    wait_for(lambda: _statuses(app, run_id, "a") not in ([], ["queued"]), 30, "a begins")
    try:
        wait_for(lambda: _statuses(app, run_id, "gate") == ["running"], 1.5, "the gate begins")
    except AssertionError:
        pass  # no attempt of its own: the `when` runs inside a's completion


def _row_is_free(app, run_id: str) -> bool:
    """Whether another connection can lock the run's row right now (PostgreSQL)."""
    with app.app_context():
        engine = db.engine
        if engine.dialect.name != "postgresql":
            return True  # SQLite has no row locks: the cancel below is the check there
        with engine.connect() as conn:
            try:
                conn.execute(text("SELECT id FROM apg_run WHERE id = :id FOR UPDATE NOWAIT"),
                             {"id": run_id})
                return True
            except Exception as exc:  # LockNotAvailable
                assert "lock" in str(exc).lower(), exc
                return False
            finally:
                conn.rollback()


def test_a_when_over_its_budget_fails_its_task_naming_the_field(
        app, client, op, worker):
    run_id = _gated(client, op)
    _evaluating(app, run_id)
    assert _row_is_free(app, run_id)  # nothing holds the run while the `when` runs
    got = wait_for(lambda: finished(client, op, run_id), 60, "the run did not finish")
    assert got["status"] == "failed"
    gate = {t["task_id"]: t for t in got["tasks"]}["gate"]
    assert gate["status"] == "failed"
    assert gate["error"] == f"when: expression exceeded its {BUDGET:g} s budget"
    assert gate["attempts"] == 1  # not retried, whatever the retry policy


def _cancelled_while_evaluating(app, client, op, run_id: str) -> dict:
    """Cancel the run while its gate's expression is evaluated: the cancel answers at
    once, and the evaluation, ending over its budget afterwards, does not count. The
    gate task as the finished run shows it."""
    _evaluating(app, run_id)
    r = client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"])
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["result"]["status"] == "cancelled"
    wait_for(lambda: "running" not in _statuses(app, run_id, "gate"), 60, "the gate ends")
    got = finished(client, op, run_id)
    assert got is not None and got["status"] == "cancelled"
    return {t["task_id"]: t for t in got["tasks"]}["gate"]


def test_a_cancel_is_not_blocked_by_an_expression_under_way(app, client, op, worker):
    gate = _cancelled_while_evaluating(app, client, op, _gated(client, op))
    assert gate["status"] == "cancelled"


# A for_each task's `when` and its list are evaluated by the attempt that makes its
# elements, on a worker, with the run's row free until the elements are stored.
FAN_OUT = {
    "for_each": {"for_each": HUGE_LOOP},
    "when": {"for_each": [1, 2], "when": HUGE_LOOP},
}


def _fanned(client, op, field: str) -> str:
    return start_id(client, op, make(client, op, [
        {"id": "a", "type": "python",
         "with": {"callable": "tests.support.callables:add", "kwargs": {"a": 1, "b": 2}}},
        {"id": "gate", "type": "noop", "depends_on": ["a"], **FAN_OUT[field],
         "retry": {"max_attempts": 3}},
    ]))


@pytest.mark.parametrize("field", sorted(FAN_OUT))
def test_a_for_each_over_its_budget_fails_its_task_naming_the_field(
        app, client, op, worker, field):
    run_id = _fanned(client, op, field)
    _evaluating(app, run_id)
    assert _row_is_free(app, run_id)  # nothing holds the run while the list is evaluated
    got = wait_for(lambda: finished(client, op, run_id), 60, "the run did not finish")
    assert got["status"] == "failed"
    gate = {t["task_id"]: t for t in got["tasks"]}["gate"]
    assert gate["status"] == "failed"
    assert gate["error"] == f"{field}: expression exceeded its {BUDGET:g} s budget"
    assert gate["attempts"] == 0  # no element was made, nothing retried
    assert _statuses(app, run_id, "gate") == []


@pytest.mark.parametrize("field", sorted(FAN_OUT))
def test_a_cancel_wins_over_a_for_each_under_way(app, client, op, worker, field):
    gate = _cancelled_while_evaluating(app, client, op, _fanned(client, op, field))
    assert gate["status"] == "cancelled"
    assert gate["error"] is None


def test_a_legacy_approvers_template_is_rendered_with_no_transaction_open(
        app, client, op, factory, monkeypatch):
    """An approval waiting since before its prompt was kept (migration 0006) renders
    ``with.approvers`` when it is answered: before the answer takes the run's lock, with
    the read that fed it ended."""
    run_id = start_id(client, op, make(client, op, [
        {"id": "first", "type": "noop", "with": {"value": "Operator"}},
        {"id": "ask", "type": "approval", "depends_on": ["first"],
         "with": {"message": "ship it?", "approvers": "{{ tasks.first.output }}"}},
    ]))
    work_once(app)
    with app.app_context():  # as it was before 0006: no prompt
        db.session.execute(update(TaskRun).where(TaskRun.run_id == run_id,
                                                 TaskRun.task_id == "ask").values(prompt=None))
        db.session.commit()
        db.session.remove()
    original, seen = dsl.render, []

    def render(value: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("path") == "with.approvers":
            seen.append((db.session().in_transaction(), _row_is_free(app, run_id)))
        return original(value, *args, **kwargs)

    monkeypatch.setattr(dsl, "render", render)
    url = f"/api/v1/runs/{run_id}/tasks/ask/approve"
    r = client.post(url, json={"comment": "me"}, headers=op["h"])  # an Author
    assert r.status_code == 403 and "'Operator'" in r.get_json()["message"]
    operator = auth(api_token(client, factory.user("Operator", teams=[op["team"]])["username"]))
    assert client.post(url, json={"comment": "ok"}, headers=operator).status_code == 200
    assert seen == [(False, True), (False, True)]
    assert drain(app, run_id) == "succeeded"


@pytest.mark.parametrize("field", sorted(FAN_OUT))
def test_a_stop_ends_an_evaluation_under_way(app, client, op, field):
    """A cancel stops the job of the attempt it cancels: an expression being evaluated
    is cut short there (``JobStopped``), so the worker is free at once and not killed
    by its watchdog when the budget is longer than the stop's grace."""
    run_id = _fanned(client, op, field)
    with app.app_context():
        run = db.session.get(Run, run_id)
        plan = state.plan_for(db.session, run)
        ctx = AttemptContext("attempt", 1, run_id, plan.specs["gate"], plan.definition,
                             expands=True)
        settings = replace(dispatcher_for(app).settings, expression_timeout=20.0)
        previous = signal.getsignal(interrupt.STOP_SIGNAL)
        interrupt.install()
        interrupt.job_started("the-job")
        stop = threading.Timer(0.5, interrupt.request_stop, ["the-job"])
        stop.start()
        try:
            with pytest.raises(interrupt.JobStopped):
                foreach.evaluate(db.session, ctx, settings)
        finally:
            stop.cancel()
            interrupt.job_ended()
            signal.signal(interrupt.STOP_SIGNAL, previous)
            db.session.remove()
