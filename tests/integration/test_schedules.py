"""Schedules (TRIGGERS.md): the API, and the ticker's decisions driven by the
controllable clock (``triggers.clock``): DST days, downtime catch-up, overlap, params
that stopped being valid, a deleted workflow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from capability.engine.dispatch import dispatcher_for
from capability.models import Run
from capability.triggers import clock, ticker
from capability.triggers.models import ScheduleTick
from tests.support.app import Factory, api_token, auth
from tests.support.runs import make

UTC = dt.UTC
NOOP = [{"id": "a", "type": "noop"}]


@pytest.fixture()
def at() -> Iterator[Any]:
    """Set the clock: ``at(datetime)``; back to the system clock afterwards."""
    def move(when: dt.datetime) -> dt.datetime:
        clock.set_override(when)
        return when
    yield move
    clock.set_override(None)


def _pass(app: Flask, when: dt.datetime) -> ticker.PassReport:
    with app.app_context():
        try:
            return ticker.run_pass(db.session, dispatcher_for(app), when)
        finally:
            db.session.remove()


def _schedule(client: FlaskClient, op: dict[str, Any], wid: str, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/schedules/", headers=op["h"],
                    json={"workflow_id": wid, **body})
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json()["result"])


def _ledger(app: Flask, sid: str) -> list[tuple[dt.datetime, str, str | None]]:
    with app.app_context():
        rows = db.session.execute(select(ScheduleTick).where(
            ScheduleTick.schedule_id == sid).order_by(ScheduleTick.scheduled_for)).scalars()
        out = [(r.scheduled_for, r.outcome, r.run_id) for r in rows]
        db.session.remove()
    return out


def _hours(app: Flask, start: dt.datetime, hours: int, step: int = 30) -> None:
    """Passes every ``step`` minutes from ``start`` for ``hours`` hours (a running
    scheduler, on time)."""
    for minute in range(0, hours * 60 + 1, step):
        clock.set_override(start + dt.timedelta(minutes=minute))
        _pass(app, start + dt.timedelta(minutes=minute))


# -- DST ------------------------------------------------------------------------------

@pytest.mark.parametrize(("zone", "day", "expr", "policy", "fired", "skipped"), [
    ("Europe/Berlin", "2027-03-28", "30 2 * * *", {}, 1, 0),
    ("Europe/Berlin", "2027-10-31", "30 2 * * *", {}, 1, 1),
    ("Europe/Berlin", "2027-03-28", "30 2 * * *", {"missing": "skip"}, 0, 1),
    ("Europe/Berlin", "2027-10-31", "30 2 * * *", {"repeated": "both"}, 2, 0),
    ("America/New_York", "2027-03-14", "30 2 * * *", {}, 1, 0),
    ("America/New_York", "2027-11-07", "30 1 * * *", {}, 1, 1),
    ("America/New_York", "2027-11-07", "30 1 * * *", {"repeated": "both"}, 2, 0),
    ("Europe/Berlin", "2027-03-28", "0 * * * *", {}, 23, 0),
    ("Europe/Berlin", "2027-10-31", "0 * * * *", {}, 25, 0),
    ("America/New_York", "2027-11-07", "0 * * * *", {}, 25, 0),
])
def test_dst_days(app: Flask, client: FlaskClient, op: dict[str, Any], at: Any, zone: str,
                  day: str, expr: str, policy: dict[str, str], fired: int,
                  skipped: int) -> None:
    """A running scheduler passes every 30 minutes through the whole local day."""
    from zoneinfo import ZoneInfo

    midnight = dt.datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    at(midnight - dt.timedelta(minutes=1))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron=expr, timezone=zone, overlap="allow",
                  dst={"missing": "shift", "repeated": "first", **policy})
    end = dt.datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone)) + dt.timedelta(days=1)
    hours = int((end.astimezone(UTC) - midnight).total_seconds() // 3600)
    _hours(app, midnight, hours, step=15 if expr.startswith("0 *") else 30)
    ledger = [row for row in _ledger(app, s["id"]) if row[0] < end.astimezone(UTC)]
    outcomes = [o for _, o, _ in ledger]
    assert outcomes.count("fired") == fired, ledger
    assert outcomes.count("skipped_dst") == skipped, ledger
    with app.app_context():
        runs = db.session.execute(select(Run).where(Run.trigger_source_id == s["id"])).scalars()
        scheduled = sorted(r.scheduled_for for r in runs
                           if r.scheduled_for < end.astimezone(UTC))
        db.session.remove()
    assert scheduled == sorted(t for t, o, _ in ledger if o == "fired")
    assert len(set(scheduled)) == len(scheduled)


# -- downtime -------------------------------------------------------------------------

@pytest.mark.parametrize(("catchup", "fired"), [("none", 0), ("latest", 1), ("all", 3)])
def test_three_hours_of_downtime(app: Flask, client: FlaskClient, op: dict[str, Any],
                                 at: Any, catchup: str, fired: int) -> None:
    t0 = at(dt.datetime(2027, 5, 3, 0, 10, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="0 * * * *", catchup=catchup, overlap="allow")
    _pass(app, t0)
    back = at(t0 + dt.timedelta(hours=3, minutes=20))  # 01:00, 02:00 and 03:00 missed
    report = _pass(app, back)
    ledger = _ledger(app, s["id"])
    assert [t.hour for t, _, _ in ledger] == [1, 2, 3]
    outcomes = [o for _, o, _ in ledger]
    assert outcomes.count("fired") == fired
    assert outcomes.count("skipped_catchup") == 3 - fired
    if catchup == "latest":
        assert ledger[-1][1] == "fired"  # the most recent one
    assert sum(report.outcomes.values()) == 3
    # Nothing is decided twice: another pass at the same instant does nothing.
    assert _pass(app, back).outcomes == {}
    assert len(_ledger(app, s["id"])) == 3


def test_ticks_older_than_the_window_are_dropped(app: Flask, client: FlaskClient,
                                                 op: dict[str, Any], at: Any) -> None:
    t0 = at(dt.datetime(2027, 5, 3, 0, 10, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="0 * * * *", catchup="all", catchup_window="2h",
                  overlap="allow")
    _pass(app, at(t0 + dt.timedelta(hours=10)))  # 10:10: only 09:00 and 10:00 count
    assert [(t.hour, o) for t, o, _ in _ledger(app, s["id"])] == [(9, "fired"), (10, "fired")]


# -- overlap --------------------------------------------------------------------------

def _minutes(app: Flask, t0: dt.datetime, *minutes: int) -> None:
    for m in minutes:
        clock.set_override(t0 + dt.timedelta(minutes=m, seconds=5))
        _pass(app, t0 + dt.timedelta(minutes=m, seconds=5))


@pytest.mark.parametrize(("overlap", "outcomes"), [
    ("allow", ["fired", "fired", "fired"]),
    ("skip", ["fired", "skipped_overlap", "skipped_overlap"]),
    ("buffer_one", ["fired", "buffered", "skipped_overlap"]),
    ("cancel_other", ["fired", "fired", "fired"]),
])
def test_overlap_policies_while_a_run_is_active(app: Flask, client: FlaskClient,
                                                op: dict[str, Any], at: Any, overlap: str,
                                                outcomes: list[str]) -> None:
    """No worker runs here: a started run stays queued, i.e. active."""
    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="* * * * *", overlap=overlap)
    _minutes(app, t0, 1, 2, 3)
    ledger = _ledger(app, s["id"])
    assert [o for _, o, _ in ledger] == outcomes
    with app.app_context():
        runs = list(db.session.execute(select(Run).where(
            Run.trigger_source_id == s["id"]).order_by(Run.created_at)).scalars())
        statuses = [r.status for r in runs]
        db.session.remove()
    if overlap == "cancel_other":
        assert statuses == ["cancelled", "cancelled", "queued"]
    if overlap == "buffer_one":
        # The active run ends: the buffered tick starts at the next pass, as fired.
        r = client.post(f"/api/v1/runs/{ledger[0][2]}/cancel", headers=op["h"])
        assert r.status_code == 200, r.get_json()
        _pass(app, at(t0 + dt.timedelta(minutes=3, seconds=30)))  # the buffer's poll
        ledger = _ledger(app, s["id"])
        assert ledger[1][1] == "fired" and ledger[1][2] is not None
        run = client.get(f"/api/v1/runs/{ledger[1][2]}", headers=op["h"]).get_json()["result"]
        assert run["scheduled_for"] == ledger[1][0].isoformat()


# -- bad state at a tick ---------------------------------------------------------------

def test_params_no_longer_valid_fail_the_tick_with_the_reason(
        app: Flask, client: FlaskClient, op: dict[str, Any], at: Any) -> None:
    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="* * * * *")
    definition = {"name": client.get(f"/api/v1/workflows/{wid}", headers=op["h"])
                  .get_json()["result"]["name"], "tasks": NOOP,
                  "params": {"region": {"type": "string", "required": True}}}
    r = client.put(f"/api/v1/workflows/{wid}", headers=op["h"], json={"definition": definition})
    assert r.status_code == 200, r.get_json()
    _minutes(app, t0, 1)
    [(_, outcome, run_id)] = _ledger(app, s["id"])
    assert (outcome, run_id) == ("failed", None)
    got = client.get(f"/api/v1/schedules/{s['id']}/ticks", headers=op["h"]).get_json()
    assert "region" in got["result"][0]["reason"]


def test_a_deleted_workflow_disables_its_schedule(app: Flask, client: FlaskClient,
                                                  op: dict[str, Any], at: Any) -> None:
    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="* * * * *")
    hook = client.post("/api/v1/webhooks/", headers=op["h"],
                       json={"workflow_id": wid, "name": "h"}).get_json()["result"]
    other = make(client, op, NOOP)
    listens = client.post("/api/v1/event-triggers/", headers=op["h"], json={
        "workflow_id": other, "on": {"workflow_id": wid}}).get_json()["result"]
    assert client.delete(f"/api/v1/workflows/{wid}", headers=op["h"]).status_code == 200
    got = client.get(f"/api/v1/webhooks/{hook['id']}", headers=op["h"]).get_json()["result"]
    assert got["disabled_reason"] == "its workflow was deleted"
    assert client.post(hook["url"], json={}).status_code == 404
    got = client.get(f"/api/v1/event-triggers/{listens['id']}", headers=op["h"]).get_json()
    assert got["result"]["enabled"] is False
    assert "its workflow was deleted" in got["result"]["last_refusal"]
    _minutes(app, t0, 1, 2)
    assert _ledger(app, s["id"]) == []
    with app.app_context():
        from capability.triggers.models import Schedule

        row = db.session.get(Schedule, s["id"])
        assert row is not None
        assert (row.disabled_reason, row.next_due) == ("its workflow was deleted", None)
        db.session.remove()


# -- the API --------------------------------------------------------------------------

def test_create_read_change_pause_and_delete(app: Flask, client: FlaskClient,
                                             op: dict[str, Any], at: Any) -> None:
    at(dt.datetime(2027, 1, 4, 8, 0, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="30 2 * * *", timezone="Europe/Berlin",
                  description="nightly export")
    assert s["next_fire_times"][:2] == ["2027-01-05T02:30:00+01:00",
                                        "2027-01-06T02:30:00+01:00"]
    assert (s["catchup"], s["overlap"], s["jitter"], s["dst"]) == (
        "latest", "skip", "0s", {"missing": "shift", "repeated": "first"})
    assert s["paused"] is False and s["last_tick"] is None and s["team"] == op["team"]["name"]
    got = client.get(f"/api/v1/schedules/{s['id']}", headers=op["h"]).get_json()["result"]
    assert got["cron"] == "30 2 * * *"
    listed = client.get(f"/api/v1/schedules/?workflow={wid}", headers=op["h"]).get_json()
    assert [x["id"] for x in listed["result"]] == [s["id"]]
    r = client.put(f"/api/v1/schedules/{s['id']}", headers=op["h"],
                   json={"workflow_id": wid, "cron": "@hourly"})
    assert r.status_code == 200 and r.get_json()["result"]["cron"] == "@hourly"
    r = client.post(f"/api/v1/schedules/{s['id']}/pause", headers=op["h"])
    assert r.status_code == 200
    assert (r.get_json()["result"]["paused"], r.get_json()["result"]["next_fire_times"]) == (
        True, [])
    r = client.post(f"/api/v1/schedules/{s['id']}/resume", headers=op["h"])
    assert r.get_json()["result"]["paused"] is False
    assert r.get_json()["result"]["next_fire_times"][0] == "2027-01-04T09:00:00+00:00"
    assert client.delete(f"/api/v1/schedules/{s['id']}", headers=op["h"]).status_code == 200
    assert client.get(f"/api/v1/schedules/{s['id']}", headers=op["h"]).status_code == 404


@pytest.mark.parametrize(("body", "path"), [
    ({"cron": "61 * * * *"}, "cron"), ({"cron": "* * *"}, "cron"),
    ({"timezone": "Mars/Base"}, "timezone"), ({"catchup_window": "1y"}, "catchup_window"),
    ({"jitter": "soon"}, "jitter"), ({"overlap": "sometimes"}, "overlap"),
    ({"catchup": "maybe"}, "catchup"), ({"dst": {"missing": "later"}}, "dst.missing"),
    ({"params": {"nope": 1}}, "params"), ({"cron": "0 0 30 2 *"}, "cron"),
    ({"start_at": "2027-01-02T00:00:00Z", "end_at": "2027-01-01T00:00:00Z"}, "end_at"),
    ({"start_at": "2027-01-02T00:00:00"}, "start_at"),
])
def test_bad_input_names_the_field_and_saves_nothing(
        app: Flask, client: FlaskClient, op: dict[str, Any], body: dict[str, Any],
        path: str) -> None:
    wid = make(client, op, NOOP)
    r = client.post("/api/v1/schedules/", headers=op["h"],
                    json={"workflow_id": wid, "cron": "* * * * *", **body})
    assert r.status_code == 422, r.get_json()
    paths = [e["path"] for e in r.get_json()["errors"]]
    assert any(p == path or p.startswith(path + ".") for p in paths), paths
    assert client.get(f"/api/v1/schedules/?workflow={wid}",
                      headers=op["h"]).get_json()["count"] == 0


def test_preview_shows_fire_times_and_creates_nothing(client: FlaskClient,
                                                      op: dict[str, Any]) -> None:
    r = client.post("/api/v1/schedules/preview", headers=op["h"], json={
        "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "start_at": "2027-03-27T00:00:00Z", "count": 3})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["fire_times"] == [
        "2027-03-27T02:30:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00"]
    bad = client.post("/api/v1/schedules/preview", headers=op["h"],
                      json={"cron": "x", "timezone": "Nowhere"})
    assert bad.status_code == 422
    assert {e["path"] for e in bad.get_json()["errors"]} == {"cron", "timezone"}


def test_roles_and_teams(app: Flask, client: FlaskClient, factory: Factory,
                         op: dict[str, Any], at: Any) -> None:
    """Author edits; Operator pauses and resumes; Viewer reads; another team: 404."""
    at(dt.datetime(2027, 1, 4, 8, 0, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="@daily")
    url = f"/api/v1/schedules/{s['id']}"
    body = {"workflow_id": wid, "cron": "@hourly"}
    team = op["team"]
    headers = {role: auth(api_token(client, factory.user(role, teams=[team])["username"]))
               for role in ("Operator", "Viewer")}
    stranger = auth(api_token(client, factory.user("Author", teams=[factory.team()])["username"]))
    viewer, operator = headers["Viewer"], headers["Operator"]
    assert client.get(url, headers=viewer).status_code == 200
    assert client.get(f"{url}/ticks", headers=viewer).status_code == 200
    assert client.put(url, headers=viewer, json=body).status_code == 403
    assert client.post(f"{url}/pause", headers=viewer).status_code == 403
    assert client.put(url, headers=operator, json=body).status_code == 403
    assert client.post("/api/v1/schedules/", headers=operator,
                       json={"workflow_id": wid, "cron": "@daily"}).status_code == 403
    assert client.post(f"{url}/pause", headers=operator).status_code == 200
    assert client.post(f"{url}/resume", headers=operator).status_code == 200
    assert client.delete(url, headers=operator).status_code == 403
    for method, path in (("get", url), ("put", url), ("delete", url),
                         ("post", f"{url}/pause"), ("get", f"{url}/ticks")):
        r = getattr(client, method)(path, headers=stranger, json=body)
        assert r.status_code == 404, (method, path, r.status_code)
    assert client.get("/api/v1/schedules/", headers=stranger).get_json()["count"] == 0
    assert client.post("/api/v1/schedules/", headers=stranger,
                       json={"workflow_id": wid, "cron": "@daily"}).status_code == 404


def test_a_scheduled_run_records_its_trigger(app: Flask, client: FlaskClient,
                                             op: dict[str, Any], at: Any) -> None:
    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="* * * * *")
    _minutes(app, t0, 1)
    [(_when, outcome, run_id)] = _ledger(app, s["id"])
    assert outcome == "fired"
    run = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert run["trigger"] == "schedule"
    assert run["trigger_source"] == {"type": "schedule", "id": s["id"]}
    assert run["scheduled_for"] == "2027-05-03T12:01:00+00:00"
    listed = client.get(f"/api/v1/runs/?trigger=schedule&trigger_source_id={s['id']}",
                        headers=op["h"]).get_json()
    assert [r["id"] for r in listed["result"]] == [run_id]
    assert client.get("/api/v1/runs/?trigger=schedule&trigger_source_id=nope",
                      headers=op["h"]).get_json()["count"] == 0
    tick = client.get(f"/api/v1/schedules/{s['id']}", headers=op["h"]).get_json()["result"]
    assert tick["last_tick"]["run_id"] == run_id


def test_jitter_delays_the_tick_but_not_its_scheduled_for(
        app: Flask, client: FlaskClient, op: dict[str, Any], at: Any) -> None:
    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="0 13 * * *", jitter="30m")
    with app.app_context():
        from capability.triggers.models import Schedule

        row = db.session.get(Schedule, s["id"])
        tick = dt.datetime(2027, 5, 3, 13, 0, tzinfo=UTC)
        delay = ticker.jitter_of(row, tick)
        assert dt.timedelta(0) <= delay < dt.timedelta(minutes=30)
        assert row.next_due == tick + delay
        db.session.remove()
    _pass(app, at(tick + delay - dt.timedelta(seconds=1)))
    assert _ledger(app, s["id"]) == []
    _pass(app, at(tick + delay))
    assert [(t, o) for t, o, _ in _ledger(app, s["id"])] == [(tick, "fired")]
    assert t0 < tick


def test_the_workflow_pages_show_triggers_next_run_and_last_run(
        app: Flask, client: FlaskClient, factory: Factory, op: dict[str, Any], at: Any) -> None:
    """The workflows list says when each runs next and how its last run ended; a
    workflow's page lists its triggers (TRIGGERS.md, "UI")."""
    from tests.support.pages import login

    at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, NOOP)
    s = _schedule(client, op, wid, cron="0 13 * * *", description="lunch report")
    _schedule(client, op, make(client, op, NOOP), cron="0 14 * * *")
    _minutes(app, dt.datetime(2027, 5, 3, 12, 59, 30, tzinfo=UTC), 1)  # 13:00 fires
    browser = login(app, factory.user("Viewer", teams=[op["team"]]))
    listed = browser.get("/workflows/list/?psize_WorkflowView=100").get_data(as_text=True)
    assert "next run 2027-05-04 13:00:00 UTC" in listed
    assert 'class="apg-last-run">queued</a>' in listed
    page = browser.get(f"/workflows/{wid}").get_data(as_text=True)
    assert f'/triggers/schedules/{s["id"]}' in page and "lunch report" in page
    other = browser.get(f"/workflows/{make(client, op, NOOP)}").get_data(as_text=True)
    assert 'id="no-triggers"' in other


def test_expressions_read_run_scheduled_for(app: Flask, client: FlaskClient,
                                            op: dict[str, Any], at: Any) -> None:
    from tests.support.engine import drain

    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    wid = make(client, op, [{"id": "t", "type": "transform",
                             "with": {"value": "{{ run.scheduled_for }} {{ trigger.payload }}"}}])
    s = _schedule(client, op, wid, cron="* * * * *")
    _minutes(app, t0, 1)
    [(_, _, run_id)] = _ledger(app, s["id"])
    assert drain(app, run_id) == "succeeded"
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert got["tasks"][0]["output"] == "2027-05-03T12:01:00+00:00 null"


def test_a_pass_is_skipped_only_when_nothing_is_due(app: Flask, client: FlaskClient,
                                                    op: dict[str, Any], at: Any) -> None:
    """``triggers.due``: the scheduler's cheap check before loading any trigger code."""
    from capability.triggers import due

    t0 = at(dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC))
    _schedule(client, op, make(client, op, NOOP), cron="0 13 * * *")
    with app.app_context():
        assert due.pending(db.session, t0 + dt.timedelta(hours=2)) is True
        db.session.remove()
