"""Backfill (TRIGGERS.md): bounded, counted first, progressing as max_active_runs
admits, cancellable."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from capability.engine.dispatch import dispatcher_for
from capability.models import Run
from capability.triggers import clock, passes
from tests.support.app import Factory, api_token, auth
from tests.support.engine import drain
from tests.support.runs import make

NOOP = [{"id": "a", "type": "noop"}]
# Europe/Berlin, the autumn DST day: 25 hourly ticks.
DAY = {"start": "2027-10-30T22:00:00Z", "end": "2027-10-31T22:59:59Z"}


def _pass(app: Flask) -> passes.Report:
    with app.app_context():
        try:
            return passes.run_all(db.session, dispatcher_for(app), clock.now())
        finally:
            db.session.remove()


def _schedule(client: FlaskClient, op: dict[str, Any], **definition: Any) -> str:
    wid = make(client, op, NOOP, **definition)
    r = client.post("/api/v1/schedules/", headers=op["h"], json={
        "workflow_id": wid, "cron": "0 * * * *", "timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def _runs(app: Flask, backfill_id: str) -> list[Run]:
    with app.app_context():
        found = list(db.session.execute(select(Run).where(
            Run.trigger_source_id == backfill_id).order_by(Run.scheduled_for)).scalars())
        db.session.expunge_all()
        db.session.remove()
    return found


def test_counted_first_then_bounded(client: FlaskClient, op: dict[str, Any]) -> None:
    sid = _schedule(client, op)
    url = f"/api/v1/schedules/{sid}/backfill"
    r = client.post(url, headers=op["h"], json={**DAY, "dry_run": True})
    assert (r.status_code, r.get_json()["ticks"]) == (200, 25)
    r = client.post(url, headers=op["h"], json={**DAY, "max_runs": 10})
    assert r.status_code == 422
    assert "has 25 ticks, over max_runs (10)" in r.get_json()["errors"][0]["message"]
    r = client.post(url, headers=op["h"], json={**DAY, "max_runs": 5000})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "max_runs"
    r = client.post(url, headers=op["h"], json={"start": DAY["end"], "end": DAY["start"]})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "end"


def test_runs_start_as_max_active_runs_admits(app: Flask, client: FlaskClient,
                                              op: dict[str, Any]) -> None:
    sid = _schedule(client, op, max_active_runs=2)
    r = client.post(f"/api/v1/schedules/{sid}/backfill", headers=op["h"], json=DAY)
    assert r.status_code == 201, r.get_json()
    bid, total = r.get_json()["id"], r.get_json()["ticks"]
    assert total == 25
    _pass(app)
    _pass(app)
    assert len(_runs(app, bid)) == 2  # the workflow allows two at a time
    progress = client.get(f"/api/v1/backfills/{bid}", headers=op["h"]).get_json()["result"]
    assert (progress["total"], progress["created"], progress["running"],
            progress["status"]) == (25, 2, 2, "running")
    for _ in range(30):
        for run in _runs(app, bid):
            if run.status not in ("succeeded", "failed", "cancelled"):
                drain(app, run.id)
        if _pass(app).backfills == 0 and len(_runs(app, bid)) == total:
            break
    runs = _runs(app, bid)
    assert len(runs) == 25 and {r.status for r in runs} == {"succeeded"}
    assert {r.trigger for r in runs} == {"backfill"}
    assert len({r.scheduled_for for r in runs}) == 25  # both 02:00s of the DST day
    done = client.get(f"/api/v1/backfills/{bid}", headers=op["h"]).get_json()["result"]
    assert (done["succeeded"], done["running"], done["status"]) == (25, 0, "done")


def test_buffer_one_runs_one_at_a_time_and_cancel_stops_it(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    sid = _schedule(client, op)
    r = client.post(f"/api/v1/schedules/{sid}/backfill", headers=op["h"],
                    json={**DAY, "overlap": "buffer_one"})
    bid = r.get_json()["id"]
    _pass(app)
    _pass(app)
    [first] = _runs(app, bid)
    drain(app, first.id)
    _pass(app)
    assert len(_runs(app, bid)) == 2
    r = client.post(f"/api/v1/backfills/{bid}/cancel", headers=op["h"])
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "cancelled"
    assert [x.status for x in _runs(app, bid)] == ["succeeded", "cancelled"]
    _pass(app)
    assert len(_runs(app, bid)) == 2
    assert client.post(f"/api/v1/backfills/{bid}/cancel", headers=op["h"]).status_code == 409


def test_roles_and_teams(client: FlaskClient, factory: Factory, op: dict[str, Any]) -> None:
    sid = _schedule(client, op)
    url = f"/api/v1/schedules/{sid}/backfill"
    viewer = auth(api_token(client, factory.user("Viewer", teams=[op["team"]])["username"]))
    operator = auth(api_token(client, factory.user("Operator", teams=[op["team"]])["username"]))
    stranger = auth(api_token(client, factory.user("Operator", teams=[factory.team()])
                              ["username"]))
    assert client.post(url, headers=viewer, json=DAY).status_code == 403
    assert client.post(url, headers=stranger, json=DAY).status_code == 404
    r = client.post(url, headers=operator, json=DAY)
    assert r.status_code == 201
    bid = r.get_json()["id"]
    assert client.get(f"/api/v1/backfills/{bid}", headers=viewer).status_code == 200
    assert client.get(f"/api/v1/backfills/{bid}", headers=stranger).status_code == 404
    assert client.post(f"/api/v1/backfills/{bid}/cancel", headers=viewer).status_code == 403
    assert client.post(f"/api/v1/backfills/{bid}/cancel",
                       headers=stranger).status_code == 404
