"""Agent steps (AGENTS.md, "Agent steps"): the task waits in ``waiting_input`` holding no
worker; an output is accepted through the API only when it satisfies the schema and the
checks (a refusal lists every violation, the step keeps waiting); ``fail`` fails it, not
retried; a waiting step past its timeout fails through the reaper and is retried by its
policy; downstream tasks read the output; who may answer, per role and team; the audit
trail; and what an agent reads (``runs.agents.next_for``, ``approvals_for``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rq import Worker
from rq.scheduler import RQScheduler
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.errors import NotFound
from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.security.actor import Actor
from capability.runs import agents as agent_steps
from tests.support.app import Factory, api_token, auth
from tests.support.engine import drain, work_once
from tests.support.runs import attempts, get_run, make, reap_now, start_id, wait_for

SCHEMA = {"type": "object", "required": ["category", "confidence"],
          "properties": {"category": {"enum": ["bug", "question", "feature"]},
                         "confidence": {"type": "number"}}}
AGENT = {"id": "classify", "type": "agent",
         "with": {"instructions": "Classify ticket {{ params.ticket }}",
                  "inputs": {"ticket": "{{ params.ticket }}", "n": "{{ params.n * 2 }}"},
                  "output_schema": SCHEMA, "model_hint": "fast",
                  "checks": [{"jsonpath": "$.confidence", "min": 0, "max": 1}]}}
AFTER = {"id": "route", "type": "noop", "depends_on": ["classify"],
         "with": {"value": "{{ tasks.classify.output.category }}"}}
PARAMS = {"ticket": {"type": "string", "default": "T-1"},
          "n": {"type": "integer", "default": 21}}
GOOD = {"category": "bug", "confidence": 0.9}


def task_of(client, op, run_id: str, task_id: str) -> dict[str, Any]:
    return dict(get_run(client, op, run_id)["by_task"][task_id])


def until_waiting(app, client, op, run_id: str, task_id: str = "classify",
                  status: str = "waiting_input") -> dict[str, Any]:
    """Work the queues in the test process (and move due retries onto them) until the
    step waits."""
    names = app.config["RQ_QUEUES"]
    scheduler = RQScheduler(names, connection=get_redis(app))
    scheduler.prepare_registries(names)

    def waiting() -> dict[str, Any] | None:
        scheduler.enqueue_scheduled_jobs()
        work_once(app)
        task = task_of(client, op, run_id, task_id)
        return task if task["status"] == status else None

    return dict(wait_for(waiting, 30, f"{task_id} did not wait for input"))


def waiting_run(app, client, op, tasks: list[dict[str, Any]] | None = None,
                **extra: Any) -> str:
    wid = make(client, op, tasks or [AGENT, AFTER], params=PARAMS, **extra)
    run_id = start_id(client, op, wid)
    until_waiting(app, client, op, run_id)
    return run_id


def url(run_id: str, what: str = "complete", task_id: str = "classify") -> str:
    return f"/api/v1/runs/{run_id}/tasks/{task_id}/{what}"


def events(app, run_id: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.execute(
            select(AuditEvent).where(AuditEvent.target_type == "run",
                                     AuditEvent.target_id == run_id)
            .order_by(AuditEvent.seq)).scalars())
        db.session.expunge_all()
        db.session.remove()
        return rows


def test_a_waiting_step_holds_no_worker_and_completes_through_the_api(app, client, op,
                                                                        processes):
    conn = get_redis(app)
    processes("worker")  # one worker: it must be free for another run while the step waits
    wait_for(lambda: Worker.all(connection=conn), 30, "no worker registered")
    run_id = start_id(client, op, make(client, op, [AGENT, AFTER], params=PARAMS))
    wait_for(lambda: task_of(client, op, run_id, "classify")["status"] == "waiting_input",
             30, "the agent step did not wait")
    task = task_of(client, op, run_id, "classify")
    assert task["prompt"] == {
        "instructions": "Classify ticket T-1", "inputs": {"ticket": "T-1", "n": 42},
        "output_schema": SCHEMA, "model_hint": "fast",
        "checks": [{"jsonpath": "$.confidence", "min": 0, "max": 1}]}
    assert [a.status for a in attempts(app, run_id, "classify")] == ["waiting"]
    assert task_of(client, op, run_id, "route")["status"] == "pending"

    other = start_id(client, op, make(client, op, [
        {"id": "a", "type": "noop", "with": {"value": 1}},
        {"id": "b", "type": "noop", "depends_on": ["a"]}]))
    wait_for(lambda: get_run(client, op, other)["status"] == "succeeded", 30,
             "the other run did not finish while the step waited")
    assert task_of(client, op, run_id, "classify")["status"] == "waiting_input"

    r = client.post(url(run_id), json={"output": GOOD}, headers=op["h"])
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["result"] == {"run_id": run_id, "task_id": "classify",
                                      "status": "succeeded", "error": None,
                                      "run_status": "running"}
    wait_for(lambda: get_run(client, op, run_id)["status"] == "succeeded", 30,
             "the run did not finish after the output")
    got = get_run(client, op, run_id)
    assert got["by_task"]["classify"]["output"] == GOOD
    assert got["by_task"]["route"]["output"] == "bug"  # downstream reads the output


def test_a_schema_breaking_output_is_refused_listing_every_violation(app, client, op):
    run_id = waiting_run(app, client, op)
    for body, errors in (
        ({"output": {"category": "feature-request", "confidence": "high"}}, [
            {"path": "output.category",
             "message": "'feature-request' is not one of ['bug', 'question', 'feature']"},
            {"path": "output.confidence", "message": "'high' is not of type 'number'"}]),
        ({"output": []}, [{"path": "output", "message": "[] is not of type 'object'"}]),
        ({"output": {"category": "bug", "confidence": 1.5}}, [
            {"path": "output.confidence",
             "message": "checks[0] ($.confidence): 1.5 is more than the maximum 1"}]),
    ):
        r = client.post(url(run_id), json=body, headers=op["h"])
        assert r.status_code == 422, r.get_json()
        assert r.get_json()["errors"] == errors
        assert "still waiting" in r.get_json()["message"]
        task = task_of(client, op, run_id, "classify")
        assert task["status"] == "waiting_input" and task.get("output") is None
        assert [a.status for a in attempts(app, run_id, "classify")] == ["waiting"]
    for body, paths in (({}, ["output"]), ({"output": GOOD, "extra": 1}, ["extra"])):
        r = client.post(url(run_id), json=body, headers=op["h"])
        assert r.status_code == 422 and [e["path"] for e in r.get_json()["errors"]] == paths
    r = client.post(url(run_id), json={"output": GOOD}, headers=op["h"])
    assert r.status_code == 200, r.get_json()
    assert drain(app, run_id) == "succeeded"
    refused = [e for e in events(app, run_id) if e.outcome == "error"]
    assert [e.action for e in refused] == ["step_complete"] * 5  # each once, not twice
    assert refused[0].after["errors"][0]["path"] == "output.category"
    assert refused[0].after["task"] == "classify"


def test_fail_fails_the_step_without_retry_and_a_finished_step_is_409(app, client, op):
    step = {**AGENT, "retry": {"max_attempts": 3, "delay": "100ms"}}
    run_id = waiting_run(app, client, op, [step, AFTER])
    r = client.post(url(run_id, "fail"), json={"error": "the ticket is unreadable"},
                    headers=op["h"])
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["result"]["status"] == "failed"
    assert drain(app, run_id) == "failed"
    got = get_run(client, op, run_id)
    assert got["by_task"]["classify"]["error"] == "the ticket is unreadable"
    assert got["by_task"]["classify"]["attempts"] == 1
    assert got["by_task"]["route"]["status"] == "upstream_failed"
    for what, body in (("complete", {"output": GOOD}), ("fail", {"error": "again"})):
        r = client.post(url(run_id, what), json=body, headers=op["h"])
        assert r.status_code == 409, r.get_json()
        assert r.get_json()["message"] == ("Task 'classify' is failed, not waiting for input")
    r = client.post(url(run_id, "complete", "route"), json={"output": 1}, headers=op["h"])
    assert r.status_code == 409
    r = client.post(url(run_id, "complete", "nope"), json={"output": 1}, headers=op["h"])
    assert r.status_code == 422 and r.get_json()["errors"] == [
        {"path": "task_id", "message": "unknown task"}]
    r = client.post(url(run_id, "fail"), json={"error": ""}, headers=op["h"])
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "error"


def test_a_waiting_step_past_its_timeout_fails_through_the_reaper_and_retries(app, client,
                                                                            op):
    step = {**AGENT, "timeout": "1s", "retry": {"max_attempts": 2, "delay": "100ms",
                                                "jitter": False}}
    run_id = waiting_run(app, client, op, [step, AFTER])
    assert reap_now(app).timed_out == 0  # not yet
    time.sleep(1.2)
    report = reap_now(app)
    assert report.timed_out == 1, report
    first = attempts(app, run_id, "classify")[0]
    assert first.status == "failed"
    assert first.error == "timed out after 1s waiting for an agent's output"
    until_waiting(app, client, op, run_id)  # the retry waits again, with a new timeout
    assert [a.status for a in attempts(app, run_id, "classify")] == ["failed", "waiting"]
    time.sleep(1.2)
    assert reap_now(app).timed_out == 1
    assert drain(app, run_id) == "failed"
    got = get_run(client, op, run_id)
    assert got["by_task"]["classify"]["status"] == "failed"
    assert got["by_task"]["classify"]["error"] == (
        "timed out after 1s waiting for an agent's output")
    r = client.post(url(run_id), json={"output": GOOD}, headers=op["h"])
    assert r.status_code == 409


# -- who may answer ---------------------------------------------------------------------

ROLES = ["Admin", "Author", "Operator", "Viewer", "Auditor"]


@pytest.fixture()
def teams(app, client, factory: Factory) -> dict[str, Any]:
    own, other = factory.team(), factory.team()
    headers = {}
    for role in ROLES:
        user = factory.user(role, teams=[own] if role != "Admin" else None)
        headers[role] = auth(api_token(client, user["username"]))
        outsider = factory.user(role, teams=[other]) if role != "Admin" else None
        if outsider is not None:
            headers[f"other {role}"] = auth(api_token(client, outsider["username"]))
    author = factory.user("Author", teams=[own])
    return {"op": {"team": own, "h": auth(api_token(client, author["username"]))},
            "h": headers}


EXPECTED = {"Admin": 200, "Author": 200, "Operator": 200, "Viewer": 403, "Auditor": 403,
            "other Author": 404, "other Operator": 404, "other Viewer": 403,
            "other Auditor": 403}


@pytest.mark.parametrize("who", list(EXPECTED))
@pytest.mark.parametrize("what", ["complete", "fail"])
def test_who_may_answer_an_agent_step(app, client, teams, who, what):
    op = teams["op"]
    run_id = waiting_run(app, client, op)
    body = {"output": GOOD} if what == "complete" else {"error": "no"}
    r = client.post(url(run_id, what), json=body, headers=teams["h"][who])
    assert r.status_code == EXPECTED[who], (who, r.get_json())
    status = task_of(client, op, run_id, "classify")["status"]
    if EXPECTED[who] == 200:
        assert status == ("succeeded" if what == "complete" else "failed")
        assert r.get_json()["result"]["task_id"] == "classify"
    else:
        assert status == "waiting_input"
    if EXPECTED[who] == 404:
        assert r.get_json() == {"message": "Not found"}
    last = events(app, run_id)[-1]
    action = "step_complete" if what == "complete" else "step_fail"
    if EXPECTED[who] == 200:
        assert (last.action, last.outcome, last.team) == (action, "success",
                                                         op["team"]["name"])
        assert last.after["task"] == "classify" and last.before == {"status": "running"}
        if what == "fail":
            assert last.after["error"] == "no"
    elif EXPECTED[who] == 404:
        # Refused by the service: recorded once, as the caller's attempt, with no team
        # of a run the caller cannot see.
        assert (last.action, last.outcome, last.team) == (action, "error", None)
    else:  # refused by the permission check (Runs: can_control) before the service
        assert last.action == "start"


# -- what an agent reads ----------------------------------------------------------------

def member(op: dict[str, Any], role: str) -> Actor:
    return Actor(username=f"{role.lower()}-of-{op['team']['name']}", user_id=1,
                 roles=frozenset({role}), team_ids=frozenset({op["team"]["id"]}))


def test_next_for_lists_the_steps_approvals_and_progress_for_the_caller(app, client, op):
    tasks = [AGENT, AFTER,
             {"id": "sign", "type": "approval", "with": {"message": "Ship {{ params.ticket }}?",
                                                         "approvers": "Operator"}},
             {"id": "slow", "type": "delay", "with": {"seconds": "1h"}}]
    run_id = start_id(client, op, make(client, op, tasks, params=PARAMS))
    until_waiting(app, client, op, run_id)
    until_waiting(app, client, op, run_id, "sign", "waiting_approval")
    operator, viewer, author = (member(op, role) for role in ("Operator", "Viewer", "Author"))
    stranger = Actor(username="stranger", user_id=2, roles=frozenset({"Operator"}),
                     team_ids=frozenset({"another-team"}))
    with app.app_context():
        got = agent_steps.next_for(db.session, operator, run_id)
        seen = agent_steps.next_for(db.session, viewer, run_id)
        by_author = agent_steps.next_for(db.session, author, run_id)
        listed = agent_steps.approvals_for(db.session, operator)
        not_listed = (agent_steps.approvals_for(db.session, viewer),
                      agent_steps.approvals_for(db.session, author))
        with pytest.raises(NotFound):
            agent_steps.next_for(db.session, stranger, run_id)
        db.session.remove()
    assert got["run_id"] == run_id and got["status"] == "running" and not got["done"]
    assert got["progress"] == {"done": 0, "total": 4}
    (step,) = got["steps"]
    assert {k: step[k] for k in ("task_id", "instructions", "inputs", "output_schema",
                                 "model_hint")} == {
        "task_id": "classify", "instructions": "Classify ticket T-1",
        "inputs": {"ticket": "T-1", "n": 42}, "output_schema": SCHEMA, "model_hint": "fast"}
    assert [(a["task_id"], a["message"], a["approvers"]) for a in got["approvals"]] == [
        ("sign", "Ship T-1?", "Operator")]
    assert got["running"] == ["slow"]
    # A Viewer may answer neither; an Author may complete the step but not this approval
    # (its approvers are Operators).
    assert seen["steps"] == [] and seen["approvals"] == []
    assert seen["progress"] == got["progress"] and seen["running"] == ["slow"]
    assert [s["task_id"] for s in by_author["steps"]] == ["classify"]
    assert by_author["approvals"] == []
    assert [(a["run_id"], a["task_id"], a["message"]) for a in listed] == [
        (run_id, "sign", "Ship T-1?")]
    assert not_listed == ([], [])

    assert client.post(url(run_id), json={"output": GOOD}, headers=op["h"]).status_code == 200
    with app.app_context():
        after = agent_steps.next_for(db.session, operator, run_id)
        db.session.remove()
    assert after["steps"] == [] and after["progress"]["done"] == 1
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"]).status_code == 200
    with app.app_context():
        done = agent_steps.next_for(db.session, operator, run_id)
        db.session.remove()
    assert done["done"] is True and done["status"] == "cancelled" and done["approvals"] == []
    assert done["progress"] == {"done": 4, "total": 4}
