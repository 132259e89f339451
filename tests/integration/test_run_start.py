"""Starting a run under pressure: per-team quotas (``TEAM_MAX_ACTIVE_RUNS``,
``TEAM_RUN_RATE``) answered with 429 and ``Retry-After`` from the API and the run form,
a start during a Redis outage (201 ``queued`` once committed: the reaper sends it
later), and two starts racing with one new idempotency key (201 and 200, one run)."""

from __future__ import annotations

import re
import socket
import threading
from typing import Any

import redis
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from capability.models import Run
from tests.support.app import api_token, auth, unique
from tests.support.engine import drain, run_status
from tests.support.pages import login, make_workflow
from tests.support.runs import make, reap_now, start, start_id


def runs_of(app, wid: str) -> int:
    with app.app_context():
        count = db.session.execute(
            select(func.count()).select_from(Run).where(Run.workflow_id == wid)).scalar_one()
        db.session.remove()
        return int(count)


def refusals(app, wid: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.execute(select(AuditEvent).where(
            AuditEvent.action == "start", AuditEvent.target_id == wid,
            AuditEvent.outcome == "error").order_by(AuditEvent.id)).scalars())
        for row in rows:
            db.session.expunge(row)
        db.session.remove()
        return rows


# -- quotas -------------------------------------------------------------------------------

def test_a_team_at_its_active_runs_quota_gets_429_until_a_run_ends(
        app, client, op, factory, monkeypatch):
    monkeypatch.setitem(app.config, "TEAM_MAX_ACTIVE_RUNS", 2)
    wid = make(client, op, [{"id": "a", "type": "noop"}])
    first = start_id(client, op, wid)
    keyed = start(client, op, wid, idempotency_key="kept")
    assert keyed.status_code == 201  # queued: nothing works the queues here
    r = start(client, op, wid)
    assert r.status_code == 429, r.get_json()
    message = r.get_json()["message"]
    assert f"Team {op['team']['name']} has 2 active runs" in message
    assert "TEAM_MAX_ACTIVE_RUNS = 2" in message
    assert int(r.headers["Retry-After"]) > 0
    assert runs_of(app, wid) == 2
    # The refusal is audited with its reason; asking again for a run that exists is not
    # a new start, and is answered as always.
    assert "TEAM_MAX_ACTIVE_RUNS" in refusals(app, wid)[-1].after["message"]
    again = start(client, op, wid, idempotency_key="kept")
    assert again.status_code == 200 and again.get_json()["id"] == keyed.get_json()["id"]
    # Another team has its own count.
    other = factory.team()
    h = auth(api_token(client, factory.user("Author", teams=[other])["username"]))
    other_wid = make(client, {"team": other, "h": h}, [{"id": "a", "type": "noop"}])
    assert start(client, {"h": h}, other_wid).status_code == 201
    # A run that ended frees its place.
    assert client.post(f"/api/v1/runs/{first}/cancel", headers=op["h"]).status_code == 200
    assert start(client, op, wid).status_code == 201


def test_a_team_over_its_start_rate_gets_429_with_the_seconds_to_wait(
        app, client, op, monkeypatch):
    monkeypatch.setitem(app.config, "TEAM_RUN_RATE", 2)
    wid = make(client, op, [{"id": "a", "type": "noop"}])
    other_wid = make(client, op, [{"id": "a", "type": "noop"}])
    start_id(client, op, wid)
    start_id(client, op, other_wid)  # the rate is the team's, over all its workflows
    r = start(client, op, wid)
    assert r.status_code == 429, r.get_json()
    message = r.get_json()["message"]
    assert f"Team {op['team']['name']} started 2 runs in the last minute" in message
    assert "TEAM_RUN_RATE = 2" in message
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 60 and f"try again in {wait}s" in message
    assert runs_of(app, wid) == 1
    assert "TEAM_RUN_RATE" in refusals(app, wid)[-1].after["message"]
    # Unlimited again: 0 turns a quota off.
    monkeypatch.setitem(app.config, "TEAM_RUN_RATE", 0)
    assert start(client, op, wid).status_code == 201


def test_sub_workflow_runs_count_as_active_but_are_never_refused(
        app, client, op, monkeypatch):
    """The engine starts a sub-workflow's run mid-run: refusing it would fail a run that
    was admitted. It counts toward the team's active runs (and not toward its rate)."""
    child = unique("child")
    r = client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"],
        "definition": {"name": child, "tasks": [{"id": "c", "type": "noop"}]}})
    assert r.status_code == 201, r.get_json()
    parent = make(client, op, [{"id": "sub", "type": "workflow", "with": {"workflow": child}}])
    monkeypatch.setitem(app.config, "TEAM_MAX_ACTIVE_RUNS", 1)
    monkeypatch.setitem(app.config, "TEAM_RUN_RATE", 1)
    run_id = start_id(client, op, parent)
    assert drain(app, run_id) == "succeeded"  # the child started although at the quota
    with app.app_context():
        children = db.session.execute(select(Run).where(Run.parent_run_id == run_id)).scalars()
        assert [c.status for c in children] == ["succeeded"]
        db.session.remove()
    r = start(client, op, parent)  # one start by a client in the last minute: the rate
    assert r.status_code == 429 and "TEAM_RUN_RATE = 1" in r.get_json()["message"]


def test_the_run_form_over_a_quota_answers_429_with_the_reason(app, client, factory,
                                                               monkeypatch):
    team = factory.team()
    user = factory.user("Operator", teams=[team])
    author = factory.user("Author", teams=[team])
    h = auth(api_token(client, author["username"]))
    wid = make_workflow(client, h, team["name"], [{"id": "a", "type": "noop"}])
    monkeypatch.setitem(app.config, "TEAM_RUN_RATE", 1)
    browser = login(app, user)
    assert browser.post(f"/workflows/{wid}/run", data={}).status_code == 302
    r = browser.post(f"/workflows/{wid}/run", data={})
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    page = r.get_data(as_text=True)
    assert re.search(rf"Team {team['name']} started 1 runs? in the last minute", page)
    assert 'class="collapse in" id="run-panel"' in page  # the form stays open
    assert runs_of(app, wid) == 1
    assert refusals(app, wid)[-1].actor == user["username"]


# -- a Redis outage -----------------------------------------------------------------------

def _dead_redis() -> redis.Redis:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)


def test_a_run_committed_while_redis_is_down_answers_201_queued(app, client, op, monkeypatch):
    wid = make(client, op, [{"id": "a", "type": "noop", "with": {"value": 1}},
                            {"id": "b", "type": "noop", "depends_on": ["a"]}])
    monkeypatch.setitem(app.extensions, "apg_redis", _dead_redis())
    r = start(client, op, wid, idempotency_key="during-outage")
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["result"]["status"] == "queued"
    run_id = r.get_json()["id"]
    # A client that retries with its key gets the same run, not a second one.
    again = start(client, op, wid, idempotency_key="during-outage")
    assert again.status_code == 200 and again.get_json()["id"] == run_id
    assert runs_of(app, wid) == 1
    # Controls are answered too once committed (the reaper sends what they queued).
    assert client.post(f"/api/v1/runs/{run_id}/pause", headers=op["h"]).status_code == 200
    assert client.post(f"/api/v1/runs/{run_id}/resume", headers=op["h"]).status_code == 200
    monkeypatch.undo()  # Redis is back: the reaper sends what the database says is queued
    assert run_status(app, run_id) == "queued"
    report = reap_now(app)
    assert report.resent, report
    assert drain(app, run_id) == "succeeded"


# -- racing idempotency keys ----------------------------------------------------------------

def _race(app, headers: dict[str, str], wid: str, key: str) -> list[tuple[int, Any]]:
    """Two starts of ``wid`` with ``key``, released at the same instant."""
    barrier = threading.Barrier(2)
    answers: list[tuple[int, Any]] = []

    def go() -> None:
        racer = app.test_client()
        barrier.wait()
        r = racer.post(f"/api/v1/workflows/{wid}/runs", headers=headers,
                       json={"idempotency_key": key})
        answers.append((r.status_code, r.get_json()))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_two_starts_racing_with_one_new_key_make_one_run(app, client, op):
    wid = make(client, op, [{"id": "a", "type": "noop"}])
    rounds = 5
    for _ in range(rounds):
        answers = _race(app, op["h"], wid, unique("race"))
        assert sorted(code for code, _ in answers) == [200, 201], answers
        assert answers[0][1]["id"] == answers[1][1]["id"]
    assert runs_of(app, wid) == rounds


def test_a_start_racing_for_the_last_place_with_the_same_key_gets_the_run(
        app, client, op, monkeypatch):
    """The key is looked at again under the workflow's lock, before the quotas: the
    loser's answer is the winner's run, not a 429 for the place that run took."""
    monkeypatch.setitem(app.config, "TEAM_MAX_ACTIVE_RUNS", 3)
    wid = make(client, op, [{"id": "a", "type": "noop"}])
    for active in range(3):
        answers = _race(app, op["h"], wid, unique("last"))
        assert sorted(code for code, _ in answers) == [200, 201], (active, answers)
    assert start(client, op, wid).status_code == 429
