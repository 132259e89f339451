"""Live run updates: the Socket.IO namespace /runs (team-checked joins) and
``live.publish_run`` through the Redis message queue, as the run page uses them: a real
Socket.IO client (long-polling, as a browser falls back to) against the app served on a
real port (Flask-SocketIO's test client refuses an app with a message queue)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import socketio as sio_client
from flask import Flask

from capability import live
from tests.support.app import PASSWORD, api_token, auth, quiet_socketio_listener, serving
from tests.support.engine import drain, work_once
from tests.support.pages import APPROVAL, DIAMOND, make_workflow, start

NS = live.NAMESPACE


@pytest.fixture(scope="module")
def base_url(app: Flask) -> Iterator[str]:
    try:
        with serving(app, "live-test-server") as url:
            yield url
    finally:
        quiet_socketio_listener()


@pytest.fixture(scope="module")
def world(app: Flask) -> dict[str, Any]:
    from tests.support.app import Factory

    f = Factory(app)
    own, other = f.team(), f.team()
    client = app.test_client()
    users = {"Viewer": f.user("Viewer", teams=[own]), "Operator": f.user("Operator", teams=[own]),
             "Auditor": f.user("Auditor", teams=[own]), "Outsider": f.user("Viewer", teams=[other])}
    author = auth(api_token(client, f.user("Author", teams=[own])["username"]))
    return {"users": users, "h": author,
            "approval": make_workflow(client, author, own["name"], APPROVAL),
            "diamond": make_workflow(client, author, own["name"], DIAMOND),
            "steps": make_workflow(client, author, own["name"], STEPS)}


# Steps further apart than the workers' coalescing interval (live.MIN_INTERVAL).
STEPS = [
    {"id": "one", "type": "python",
     "with": {"callable": "tests.support.callables:sleep", "kwargs": {"seconds": 0.8}}},
    {"id": "two", "type": "python", "depends_on": ["one"],
     "with": {"callable": "tests.support.callables:sleep", "kwargs": {"seconds": 0.8}}},
    {"id": "three", "type": "noop", "depends_on": ["two"]},
]


class Watcher:
    """A signed-in browser's Socket.IO connection to /runs, collecting ``run`` events."""

    def __init__(self, base_url: str, user: dict[str, Any] | None) -> None:
        self.http = requests.Session()
        if user is not None:
            r = self.http.post(f"{base_url}/login/", allow_redirects=False,
                               data={"username": user["username"], "password": PASSWORD})
            assert r.status_code == 302, r.text[:300]
        self.events: list[dict[str, Any]] = []
        self.client = sio_client.Client(http_session=self.http, reconnection=False)
        self.client.on(live.EVENT, self.events.append, namespace=NS)
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.client.connect(base_url, namespaces=[NS], transports=["polling"],
                            headers={"Cookie": cookie}, wait_timeout=5)

    def join(self, run_id: Any) -> Any:
        return self.client.call("join", {"run_id": run_id}, namespace=NS, timeout=5)

    def received(self, run_id: str, timeout: float = 5.0,
                 until: Any = lambda state: True) -> list[dict[str, Any]]:
        """The ``run`` events for ``run_id`` so far, waiting up to ``timeout`` for ``until``."""
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.events if e.get("id") == run_id]
            if (got and until(got[-1])) or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()


def ready(app: Flask, watcher: Watcher, run_id: str) -> None:
    """Wait until the web side listens on the message queue (it subscribes in the
    background after its first connection), so the next publish is not missed."""
    for _ in range(50):
        live.publish_run(app, run_id)
        if watcher.received(run_id, timeout=0.1):
            watcher.events.clear()
            return
    raise AssertionError("no update arrived through the message queue")


def test_a_member_joins_and_sees_the_run_change_live(app, world, base_url):
    run_id = start(app.test_client(), world["h"], world["approval"])
    watcher = Watcher(base_url, world["users"]["Viewer"])
    try:
        answer = watcher.join(run_id)
        assert answer["ok"] is True and answer["run"]["id"] == run_id
        assert {t["task_id"] for t in answer["run"]["tasks"]} == {"ask", "ship"}
        ready(app, watcher, run_id)

        work_once(app)  # the worker publishes: ask starts, then waits for approval
        states = watcher.received(
            run_id, until=lambda s: s["tasks"][0]["status"] == "waiting_approval")
        assert states and states[-1]["tasks"][0]["status"] == "waiting_approval"
        assert states[-1]["tasks"][0]["attempt_history"][0]["started_at"]

        operator = requests.Session()  # a control through the run page's form
        operator.post(f"{base_url}/login/", data={
            "username": world["users"]["Operator"]["username"], "password": PASSWORD})
        r = operator.post(f"{base_url}/runs/{run_id}/control/pause", allow_redirects=False)
        assert r.status_code == 302
        states = watcher.received(run_id, until=lambda s: s["status"] == "paused")
        assert states and states[-1]["status"] == "paused"
        # What the page shows: the controls the paused run allows, by the service's rule.
        assert states[-1]["controls"] == ["cancel", "resume"]
        for state in states:  # statuses and times only: no outputs, errors or params
            assert set(state) == {"id", "status", "created_at", "started_at", "finished_at",
                                  "controls", "retry_blocked", "tasks", "compensations"}
            assert all("output" not in t and "error" not in t for t in state["tasks"])
    finally:
        watcher.close()


def test_the_worker_publishes_every_step_to_the_end(app, world, base_url):
    """Workers coalesce their updates (a burst of steps is one state), but a step that
    lasts longer than the interval is seen, and the final state always arrives."""
    run_id = start(app.test_client(), world["h"], world["steps"])
    watcher = Watcher(base_url, world["users"]["Viewer"])
    try:
        assert watcher.join(run_id)["ok"]
        ready(app, watcher, run_id)
        assert drain(app, run_id) == "succeeded"
        states = watcher.received(run_id, until=lambda s: s["status"] == "succeeded")
        assert states[-1]["status"] == "succeeded"
        assert {t["status"] for t in states[-1]["tasks"]} == {"succeeded"}
        seen = [tuple(t["status"] for t in s["tasks"]) for s in states]
        assert ("running", "pending", "pending") in seen
        assert ("succeeded", "running", "pending") in seen
    finally:
        watcher.close()


@pytest.mark.parametrize("who", ["Outsider", "Auditor"])
def test_joining_a_run_one_may_not_read_is_refused(app, world, base_url, who):
    run_id = start(app.test_client(), world["h"], world["diamond"])
    watcher = Watcher(base_url, world["users"][who])
    try:
        assert watcher.join(run_id) == {"ok": False, "error": "not found"}
        assert watcher.join(None)["ok"] is False
        live.publish_run(app, run_id)
        drain(app, run_id)
        assert watcher.received(run_id, timeout=0.5) == []
    finally:
        watcher.close()


def test_an_anonymous_socket_is_refused(base_url):
    with pytest.raises(sio_client.exceptions.ConnectionError):
        Watcher(base_url, None)


def test_publishing_never_raises(app):
    live.publish_run(app, "no-such-run")
    live.publish_attempt(app, "no-such-attempt")
    broken = Flask("broken")
    broken.config.update(REDIS_URL="redis://127.0.0.1:1/0")
    live.publish_run(broken, "x")  # no database, no Redis: logged, not raised


def test_a_worker_s_emitter_reaches_the_browser_through_a_web_process(app, world, base_url):
    """Workers publish with ``live.QueueEmitter`` (no python-socketio): the web process's
    message-queue listener must deliver what it publishes as its own emits."""
    from app.runtime.redis_conn import get_redis

    run_id = start(app.test_client(), world["h"], world["diamond"])
    watcher = Watcher(base_url, world["users"]["Viewer"])
    try:
        assert watcher.join(run_id)["ok"]
        ready(app, watcher, run_id)
        emitter = live.QueueEmitter(get_redis(app))
        state = {"id": run_id, "status": "running", "tasks": [{"task_id": "x"}]}
        emitter.emit(live.EVENT, state, namespace=NS, to=live.room(run_id))
        got = watcher.received(run_id, until=lambda s: s.get("tasks") == state["tasks"])
        assert got and got[-1] == state
        # A state serialised already (live.run_state_json) is embedded as it is.
        raw = live.RawJSON(json.dumps({**state, "status": "paused"}))
        emitter.emit(live.EVENT, raw, namespace=NS, to=live.room(run_id))
        got = watcher.received(run_id, until=lambda s: s.get("status") == "paused")
        assert got and got[-1] == json.loads(raw)
    finally:
        watcher.close()


def test_a_member_removed_from_the_team_receives_nothing_more(app, world, base_url):
    """Membership is checked again at every delivery to a run's room, whether the
    update comes from this web process or through the message queue (a worker)."""
    from app.runtime.redis_conn import get_redis
    from tests.support.app import Factory

    f = Factory(app)
    team = f.team()
    client = app.test_client()
    author = auth(api_token(client, f.user("Author", teams=[team])["username"]))
    admin = auth(api_token(client, f.user("Admin")["username"]))
    leaving, staying = f.user("Viewer", teams=[team]), f.user("Viewer", teams=[team])
    run_id = start(client, author, make_workflow(client, author, team["name"], DIAMOND))
    gone, kept = Watcher(base_url, leaving), Watcher(base_url, staying)
    try:
        assert gone.join(run_id)["ok"] and kept.join(run_id)["ok"]
        ready(app, gone, run_id)
        ready(app, kept, run_id)
        assert gone.received(run_id)  # kept's readiness check reached it as well
        gone.events.clear()
        r = client.delete(f"/api/v1/teams/{team['id']}/members/{leaving['username']}",
                          headers=admin)
        assert r.status_code == 200, r.get_json()

        live.publish_run(app, run_id)  # from a web process
        assert kept.received(run_id)
        state = {"id": run_id, "status": "running", "tasks": []}
        live.QueueEmitter(get_redis(app)).emit(live.EVENT, state, namespace=NS,
                                               to=live.room(run_id))  # from a worker
        assert kept.received(run_id, until=lambda got: got == state)[-1] == state
        assert gone.received(run_id, timeout=0.5) == []
        assert gone.join(run_id) == {"ok": False, "error": "not found"}
    finally:
        gone.close()
        kept.close()
