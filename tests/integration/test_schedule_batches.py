"""Many schedules due on the same second (issue 12's benchmark shape): decided in one
pass with a statement per step rather than per tick, within the team's quotas and each
workflow's ``max_active_runs``; and a scheduler that waits for a tick due within the
next second instead of deciding it a loop late."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from app.extensions import db
from capability.engine.dispatch import dispatcher_for
from capability.models import Run
from capability.triggers import clock, ticker
from capability.triggers.models import ScheduleTick
from tests.support.runs import make

UTC = dt.UTC
NOOP = [{"id": "a", "type": "noop"}]
T0 = dt.datetime(2027, 5, 3, 12, 0, 30, tzinfo=UTC)
DUE = dt.datetime(2027, 5, 3, 12, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.set_override(T0)
    yield
    clock.set_override(None)


def _schedules(client: FlaskClient, op: dict[str, Any], wid: str, n: int,
               **body: Any) -> list[str]:
    out = []
    for _ in range(n):
        r = client.post("/api/v1/schedules/", headers=op["h"], json={
            "workflow_id": wid, "cron": "* * * * *", "overlap": "allow", **body})
        assert r.status_code == 201, r.get_json()
        out.append(r.get_json()["result"]["id"])
    return out


def _pass(app: Flask, now: dt.datetime, ids: list[str]) -> tuple[ticker.PassReport, int]:
    """The pass's decision over these schedules at ``now`` (one chunk: the database
    holds other tests' schedules too), and the SQL statements it sent."""
    sent = [0]

    def count(*_: Any) -> None:
        sent[0] += 1

    with app.app_context():
        engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            report = ticker.PassReport()
            ticker.decide(db.session, dispatcher_for(app), ids, now, 100, report)
        finally:
            event.remove(engine, "before_cursor_execute", count)
            db.session.remove()
    return report, sent[0]


def _ticks(app: Flask, ids: list[str]) -> list[tuple[str, str | None, str | None]]:
    with app.app_context():
        rows = db.session.execute(select(ScheduleTick).where(
            ScheduleTick.schedule_id.in_(ids))).scalars()
        out = [(r.outcome, r.run_id, r.reason) for r in rows]
        db.session.remove()
    return out


def test_forty_due_schedules_take_a_few_statements_not_a_dozen_each(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    """Before the batch, each tick cost 12 statements (480 here)."""
    ids = _schedules(client, op, make(client, op, NOOP), 40)
    report, statements = _pass(app, DUE, ids)
    assert report.outcomes == {"fired": 40}
    ticks = _ticks(app, ids)
    assert len(ticks) == 40 and all(o == "fired" and r for o, r, _ in ticks)
    with app.app_context():
        runs = db.session.execute(select(Run.id, Run.scheduled_for).where(
            Run.trigger_source_id.in_(ids))).all()
        db.session.remove()
    assert {r for r, _ in runs} == {r for _, r, _ in ticks}
    assert {at for _, at in runs} == {DUE}
    assert statements <= 30, statements
    # The next pass at the same instant finds nothing: every schedule moved on.
    assert _pass(app, DUE, ids)[0].schedules == 0


def test_a_batch_stays_within_the_teams_quota(app: Flask, client: FlaskClient,
                                              op: dict[str, Any]) -> None:
    app.config["TEAM_MAX_ACTIVE_RUNS"] = 3
    try:
        ids = _schedules(client, op, make(client, op, NOOP), 4)
        ids += _schedules(client, op, make(client, op, NOOP), 2)
        report, _ = _pass(app, DUE, ids)
    finally:
        app.config["TEAM_MAX_ACTIVE_RUNS"] = 0
    assert report.outcomes == {"fired": 3, "failed": 3}
    ticks = _ticks(app, ids)
    failed = [t for t in ticks if t[0] == "failed"]
    assert all(run_id is None and "TEAM_MAX_ACTIVE_RUNS = 3" in (why or "")
               for _, run_id, why in failed), failed
    with app.app_context():
        made = db.session.execute(select(Run.id).where(Run.trigger_source_id.in_(ids))).all()
        db.session.remove()
    assert len(made) == 3


def test_a_batch_admits_what_max_active_runs_allows_and_queues_the_rest(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    ids = _schedules(client, op, make(client, op, NOOP, max_active_runs=2), 4)
    report, _ = _pass(app, DUE, ids)
    assert report.outcomes == {"fired": 4}
    runs = [r for _, r, _ in _ticks(app, ids)]
    first = [client.get(f"/api/v1/runs/{r}", headers=op["h"]).get_json()["result"]["tasks"][0]
             for r in runs]
    assert sorted(t["status"] for t in first) == ["pending", "pending", "queued", "queued"]


def test_one_key_twice_in_a_batch_is_one_run(app: Flask, client: FlaskClient,
                                              op: dict[str, Any]) -> None:
    from capability import service as workflows
    from capability.engine import outbox
    from capability.models import Workflow
    from capability.runs import starts

    wid = make(client, op, NOOP)
    with app.app_context():
        workflow = db.session.get(Workflow, wid)
        assert workflow is not None
        dispatcher = dispatcher_for(app)
        outbox.begin(db.session, dispatcher)
        batch = [starts.Start(workflow, {}, "event", key=key, source=("event", "e"))
                 for key in ("k1", "k2", "k1")]
        out = starts.open_many(db.session, dispatcher, batch)
        outbox.commit(db.session)
        assert isinstance(out[0], Run) and out[0] is out[2] and out[1] is not out[0]
        again = starts.open_many(db.session, dispatcher, batch[:1])
        assert again[0].id == out[0].id  # type: ignore[union-attr]
        db.session.rollback()
        assert workflows.version_of(db.session, workflow).version == 1
        n = db.session.execute(select(Run.id).where(Run.workflow_id == wid)).all()
        db.session.remove()
    assert len(n) == 2


def test_a_scheduler_waits_for_a_tick_due_within_the_second(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    """``blueprint._tick`` (each scheduler loop): a tick due 0.3 s ahead is waited for
    and decided when its instant comes, not at the next loop; with the clock standing
    still it gives up after ``WAKE_AHEAD``."""
    from sqlalchemy import delete, update

    from capability.blueprint import WAKE_AHEAD, _tick
    from capability.models import RunEvent
    from capability.triggers.models import Backfill

    # Years before any other test's schedules; no other trigger work pending (earlier
    # tests' ended runs and backfills would make the work due now).
    early = dt.datetime(2019, 5, 3, 12, 0, 30, tzinfo=UTC)
    due = early.replace(minute=1, second=0)
    clock.set_override(early)
    with app.app_context():
        db.session.execute(delete(RunEvent))
        db.session.execute(update(Backfill).where(Backfill.status == "running")
                           .values(status="cancelled"))
        db.session.commit()
        db.session.remove()
    [sid] = _schedules(client, op, make(client, op, NOOP), 1)
    clock.set_override(due - dt.timedelta(seconds=0.3))
    started = time.monotonic()
    with app.app_context():
        _tick(app)  # the clock stands still: nothing is decided
        db.session.remove()
    assert WAKE_AHEAD - 0.1 <= time.monotonic() - started < WAKE_AHEAD + 1
    assert _ticks(app, [sid]) == []

    def later() -> None:
        time.sleep(0.2)
        clock.set_override(due)

    mover = threading.Thread(target=later)
    mover.start()
    with app.app_context():
        _tick(app)
        db.session.remove()
    mover.join()
    [(outcome, run_id, _)] = _ticks(app, [sid])
    assert outcome == "fired" and run_id
    clock.set_override(due + dt.timedelta(seconds=5))
    started = time.monotonic()
    with app.app_context():
        _tick(app)  # the next tick is a minute away: no wait at all
        db.session.remove()
    assert time.monotonic() - started < 0.5
