"""Event triggers (TRIGGERS.md, "Events"): a run ending starts another with the
upstream's outputs; named events; the depth limit that ends A -> B -> A; the API."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from capability.engine.dispatch import dispatcher_for
from capability.models import Run, RunEvent
from capability.triggers import clock, passes
from tests.support.app import Factory, api_token, auth
from tests.support.engine import drain
from tests.support.runs import make, start_id

BUILD = [{"id": "build", "type": "transform", "with": {"value": {"url": "https://ci/b/7"}}}]
BROKEN = [{"id": "build", "type": "transform", "with": {"value": "{{ 1 // 0 }}"}}]
REPORT = [{"id": "report", "type": "noop", "with": {"value": "{{ params.report }}"}}]
REPORT_PARAMS = {"report": {"type": "string", "required": True}}


def _pass(app: Flask, max_depth: int = 10) -> passes.Report:
    with app.app_context():
        try:
            return passes.run_all(db.session, dispatcher_for(app), clock.now(),
                                  max_depth=max_depth)
        finally:
            db.session.remove()


def _trigger(client: FlaskClient, op: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/event-triggers/", headers=op["h"], json=body)
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json()["result"])


def _runs_of(app: Flask, trigger_id: str) -> list[Run]:
    with app.app_context():
        found = list(db.session.execute(select(Run).where(
            Run.trigger_source_id == trigger_id).order_by(Run.created_at)).scalars())
        db.session.expunge_all()
        db.session.remove()
    return found


def test_a_finished_run_starts_the_downstream_with_its_outputs(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    upstream = make(client, op, BUILD)
    downstream = make(client, op, REPORT, params=REPORT_PARAMS)
    t = _trigger(client, op, workflow_id=downstream,
                 on={"workflow_id": upstream, "statuses": ["succeeded"]},
                 params={"report": "{{ event.outputs.build.url }} ({{ event.status }})"})
    run_id = start_id(client, op, upstream)
    assert drain(app, run_id) == "succeeded"
    assert _pass(app).events == 1
    [started] = _runs_of(app, t["id"])
    got = client.get(f"/api/v1/runs/{started.id}", headers=op["h"]).get_json()["result"]
    assert got["params"] == {"report": "https://ci/b/7 (succeeded)"}
    assert (got["trigger"], got["trigger_source"], got["depth"]) == (
        "event", {"type": "event_trigger", "id": t["id"]}, 1)
    assert _pass(app).events == 0  # handled once
    assert len(_runs_of(app, t["id"])) == 1
    with app.app_context():
        assert db.session.execute(select(RunEvent)).first() is None
        db.session.remove()


def test_only_the_statuses_asked_for(app: Flask, client: FlaskClient,
                                     op: dict[str, Any]) -> None:
    upstream = make(client, op, BROKEN)
    downstream = make(client, op, REPORT, params=REPORT_PARAMS)
    ok = _trigger(client, op, workflow_id=downstream, on={"workflow_id": upstream},
                  params={"report": "fine"})
    bad = _trigger(client, op, workflow_id=downstream,
                   on={"workflow_id": upstream, "statuses": ["failed", "cancelled"]},
                   params={"report": "{{ event.status }}"})
    assert drain(app, start_id(client, op, upstream)) == "failed"
    _pass(app)
    assert _runs_of(app, ok["id"]) == []
    [run] = _runs_of(app, bad["id"])
    assert run.params == {"report": "failed"}


def test_a_loop_stops_at_the_depth_limit_and_says_why(app: Flask, client: FlaskClient,
                                                      op: dict[str, Any]) -> None:
    a = make(client, op, BUILD)
    b = make(client, op, BUILD)
    to_b = _trigger(client, op, workflow_id=b, on={"workflow_id": a})
    to_a = _trigger(client, op, workflow_id=a, on={"workflow_id": b})
    run_id = start_id(client, op, a)
    depths = []
    for _ in range(6):
        assert drain(app, run_id) == "succeeded"
        _pass(app, max_depth=3)
        newest = sorted(_runs_of(app, to_b["id"]) + _runs_of(app, to_a["id"]),
                        key=lambda r: r.depth)
        if not newest or newest[-1].id == run_id:
            break
        run_id = newest[-1].id
        depths.append(newest[-1].depth)
    assert depths == [1, 2, 3]  # A(0) -> B(1) -> A(2) -> B(3), then no 4th hop
    refused = client.get(f"/api/v1/event-triggers/{to_a['id']}", headers=op["h"]).get_json()
    assert "EVENT_MAX_DEPTH (3)" in refused["result"]["last_refusal"]


def test_named_events(app: Flask, client: FlaskClient, factory: Factory,
                      op: dict[str, Any]) -> None:
    wid = make(client, op, REPORT, params=REPORT_PARAMS)
    t = _trigger(client, op, workflow_id=wid, on={"event": "invoice.created"},
                 params={"report": "{{ event.payload.number }}"})
    body = {"team": op["team"]["name"], "payload": {"number": "INV-7"},
            "idempotency_key": "inv-7"}
    r = client.post("/api/v1/events/invoice.created", headers=op["h"], json=body)
    assert r.status_code == 202, r.get_json()
    [run_id] = r.get_json()["runs"]
    again = client.post("/api/v1/events/invoice.created", headers=op["h"], json=body)
    assert again.get_json()["runs"] == [run_id]  # the same key: the same run
    run = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert run["params"] == {"report": "INV-7"} and run["trigger"] == "event"
    assert run["trigger_source"] == {"type": "event_trigger", "id": t["id"]}
    other = client.post("/api/v1/events/invoice.paid", headers=op["h"], json=body)
    assert (other.status_code, other.get_json()["runs"]) == (202, [])
    bad = client.post("/api/v1/events/Invoice Created", headers=op["h"], json=body)
    assert bad.status_code == 422
    viewer = auth(api_token(client, factory.user("Viewer", teams=[op["team"]])["username"]))
    assert client.post("/api/v1/events/invoice.created", headers=viewer,
                       json=body).status_code == 403
    stranger = auth(api_token(client, factory.user("Operator", teams=[factory.team()])
                              ["username"]))
    r = client.post("/api/v1/events/invoice.created", headers=stranger, json=body)
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "team"


@pytest.mark.parametrize(("on", "path"), [
    ({}, "on"), ({"workflow_id": "x", "event": "a"}, "on"),
    ({"event": "Bad Name"}, "on"), ({"workflow_id": "@up", "statuses": ["done"]}, "on"),
])
def test_bad_input(client: FlaskClient, op: dict[str, Any], on: dict[str, Any],
                   path: str) -> None:
    wid = make(client, op, REPORT, params=REPORT_PARAMS)
    on = {k: (wid if v == "@up" else v) for k, v in on.items()}
    r = client.post("/api/v1/event-triggers/", headers=op["h"],
                    json={"workflow_id": wid, "on": on})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["errors"][0]["path"].startswith(path)


def test_roles_teams_and_the_same_team_rule(client: FlaskClient, factory: Factory,
                                           op: dict[str, Any]) -> None:
    wid = make(client, op, REPORT, params=REPORT_PARAMS)
    t = _trigger(client, op, workflow_id=wid, on={"event": "x.y"})
    url = f"/api/v1/event-triggers/{t['id']}"
    viewer = auth(api_token(client, factory.user("Viewer", teams=[op["team"]])["username"]))
    assert client.get(url, headers=viewer).status_code == 200
    assert client.delete(url, headers=viewer).status_code == 403
    other = {"team": factory.team()}
    other["h"] = auth(api_token(client, factory.user("Author", teams=[other["team"]])
                                ["username"]))
    assert client.get(url, headers=other["h"]).status_code == 404
    theirs = make(client, other, BUILD)
    r = client.post("/api/v1/event-triggers/", headers=op["h"],
                    json={"workflow_id": wid, "on": {"workflow_id": theirs}})
    assert r.status_code == 404  # their workflow is not visible to this Author
    assert client.delete(url, headers=op["h"]).status_code == 200


def test_a_payload_over_the_output_cap_is_kept_as_its_size(
        app: Flask, client: FlaskClient, op: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run-finished trigger's payload carries the upstream's outputs: stored at most
    TASK_OUTPUT_MAX_BYTES, like an output (over it: its size, not the value)."""
    monkeypatch.setitem(app.config, "TASK_OUTPUT_MAX_BYTES", 200)
    wid = make(client, op, REPORT, params=REPORT_PARAMS)
    _trigger(client, op, workflow_id=wid, on={"event": "big.one"},
             params={"report": "{{ event.payload.id }}"})
    r = client.post("/api/v1/events/big.one", headers=op["h"], json={
        "team": op["team"]["name"], "payload": {"id": "x", "pad": "y" * 500}})
    [run_id] = r.get_json()["runs"]
    with app.app_context():
        stored = db.session.get(Run, run_id).trigger_payload
        db.session.remove()
    assert stored["cut"] is True and stored["size"] > 500
