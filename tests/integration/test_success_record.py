"""A task's success is recorded on PostgreSQL in two round trips (engine.success): the
run's lock with one read after it, one write that also queues (or, followed, begins) the next task;
any other case goes to runner.complete_attempt. On SQLite every record is the general
one: these tests check what both must agree on, and the statements on PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from app.extensions import db
from capability.engine import jobs, runner, success
from capability.engine.state import Outcome
from capability.models import TaskAttempt, TaskRun
from tests.support.driver import Driver, Fifo, statements, unit


def _add(task_id: str, *deps: str, a: Any = 1) -> dict[str, Any]:
    return {"id": task_id, "type": "python", **({"depends_on": list(deps)} if deps else {}),
            "with": {"callable": "tests.support.callables:add", "kwargs": {"a": a, "b": 1}}}


class _Serving:
    def queue_names(self) -> list[str]:
        return ["default"]

    def continue_as(self, job_id: str, rq_timeout: float) -> bool:
        return True


# The success's write is prepared on each connection (engine.prepared).
_SUCCESS = "EXECUTE apg_success_write"
_BEGUN = "EXECUTE apg_begin_write"
_WRITES = ("UPDATE apg_task", "INSERT INTO apg_task_attempt", _SUCCESS, _BEGUN)


def _postgres(app: Any) -> bool:
    return str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql")


def _attempts(app: Any, run_id: str) -> list[Any]:
    with app.app_context():
        rows = db.session.execute(
            select(TaskRun.task_id, TaskRun.status, TaskRun.started_at, TaskRun.finished_at,
                   TaskRun.attempts, TaskAttempt.status.label("attempt"), TaskAttempt.worker,
                   TaskAttempt.started_at.label("began"), TaskAttempt.finished_at.label("ended"),
                   TaskAttempt.log)
            .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
            .where(TaskRun.run_id == run_id).order_by(TaskRun.position)).all()
        db.session.remove()
    return rows


@pytest.mark.parametrize("serving", [True, False], ids=["following", "one job a task"])
def test_a_chain_s_records_write_once_each(app, client, author, monkeypatch, serving):
    size = 4
    tasks = [_add("t0")] + [_add(f"t{i}", f"t{i - 1}", a=f"{{{{ tasks.t{i - 1}.output }}}}")
                            for i in range(1, size)]
    driver = Driver(app, client, author, tasks)
    monkeypatch.setattr(jobs, "serving", lambda: _Serving() if serving else None)
    monkeypatch.setattr(jobs, "_dispatcher", lambda: driver.fifo)
    monkeypatch.setattr(jobs, "_worker_name", lambda: "w1")
    with app.app_context(), statements(app) as seen:
        while driver.fifo.items:
            send = driver.fifo.items.popleft()
            jobs.run_attempt(send.attempt_id, send.instant)
    assert driver.status() == "succeeded"
    rows = _attempts(app, driver.run_id)
    assert [(r.task_id, r.status, r.attempt, r.attempts) for r in rows] == [
        (f"t{i}", "succeeded", "succeeded", 1) for i in range(size)]
    assert [driver.tasks()[f"t{i}"].output for i in range(size)] == list(range(2, size + 2))
    for r in rows:
        assert r.worker == "w1" and r.began is not None and r.ended >= r.began
        assert r.started_at is not None and r.finished_at >= r.started_at
    writes = [s for s in seen if s.lstrip().startswith(_WRITES)]
    if _postgres(app):
        # One write per record: the success with the next task queued (or begun), in one
        # statement; the run's last task, its success alone.
        assert sum(s.startswith(_SUCCESS) for s in writes) == size, writes
        if serving:  # nothing else writes a task or an attempt but the run's first
            # begin, which writes the attempt and its task in one statement too
            assert len(writes) == size + 1, writes
            assert sum(s.startswith(_BEGUN) for s in writes) == 1, writes


def test_a_join_waits_for_its_last_upstream_then_runs_once(app, client, author):
    """Two sides of a diamond, recorded one after the other: the first must not see the
    join ready (its own success is held until the commit, and the join's probe reads it
    first), the second queues it once."""
    driver = Driver(app, client, author, [
        _add("a"), _add("b", "a"), _add("c", "a"), _add("d", "b", "c")])
    assert driver.drain() == "succeeded"
    rows = _attempts(app, driver.run_id)
    assert sorted((r.task_id, r.attempt) for r in rows) == [
        ("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded"), ("d", "succeeded")]


def test_a_task_that_logs_keeps_its_lines(app, client, author):
    driver = Driver(app, client, author, [
        {"id": "talk", "type": "python",
         "with": {"callable": "tests.support.callables:chatty", "kwargs": {"lines": 2}}},
        _add("after", "talk")])
    assert driver.drain() == "succeeded"
    talk = next(r for r in _attempts(app, driver.run_id) if r.task_id == "talk")
    assert talk.log and len(talk.log) >= 2


def _begun(app: Any, client: Any, author: Any) -> tuple[Driver, Any, Any]:
    """A run of a -> b whose first attempt is begun; in an app context left open."""
    driver = Driver(app, client, author, [_add("a"), _add("b", "a")])
    send = driver.fifo.items.popleft()
    with unit(db.session, Fifo()):
        ctx = runner.begin_attempt(db.session, send.attempt_id, "w1", exclusive=True)
    assert ctx is not None and not isinstance(ctx, runner.Again) and ctx.plain
    return driver, send, ctx


def test_a_duplicate_success_is_recorded_once(app, client, author):
    fifo = Fifo()
    with app.app_context():
        driver, send, ctx = _begun(app, client, author)
        results = []
        for _ in range(2):
            with unit(db.session, fifo) as box:
                outcome = Outcome.success(2)
                recorded = (success.record(db.session, ctx, outcome)
                            if success.takes(db.session, ctx, outcome)
                            else runner.complete_attempt(db.session, send.attempt_id, outcome))
                results.append((recorded, len(box.sends)))
        db.session.remove()
    assert results[0] == (True, 1)  # b is queued once
    assert results[1][0] is False
    rows = {r.task_id: r for r in _attempts(app, driver.run_id)}
    assert rows["a"].attempt == "succeeded" and rows["b"].attempt == "queued"
    assert driver.tasks()["a"].output == 2


def test_a_record_that_waited_for_the_run_s_lock_reads_what_its_holder_wrote(
        app, client, author):
    """The lock and the read go together (one round trip) but stay two statements: a
    record that waits for the lock (here: the reaper taking the attempt as lost) must
    read the attempt as the holder left it, and record nothing."""
    fifo = Fifo()
    with app.app_context():
        driver, send, ctx = _begun(app, client, author)
        outcome = Outcome.success(2)
        if not _postgres(app):  # SQLite: every record is the general one
            assert not success.takes(db.session, ctx, outcome)
            with unit(db.session, fifo):  # nothing left running for a later reaper pass
                assert runner.complete_attempt(db.session, send.attempt_id, outcome)
            db.session.remove()
            return
        holder = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
        locked, waited = threading.Event(), threading.Event()

        def reaper() -> None:
            with holder.begin() as conn:
                conn.execute(sa.text("SELECT 1 FROM apg_run WHERE id = :id FOR UPDATE"),
                             {"id": driver.run_id})
                conn.execute(sa.text("UPDATE apg_task_attempt SET status = 'lost' "
                                     "WHERE id = :id"), {"id": send.attempt_id})
                locked.set()
                waited.wait(0.5)  # the record is waiting for the lock meanwhile
        thread = threading.Thread(target=reaper)
        thread.start()
        assert locked.wait(10)
        with unit(db.session, fifo) as box:
            assert success.takes(db.session, ctx, outcome)
            recorded = success.record(db.session, ctx, outcome)
            sends = len(box.sends)
        thread.join()
        holder.dispose()
        db.session.remove()
    assert (recorded, sends) == (False, 0)
    rows = {r.task_id: r for r in _attempts(app, driver.run_id)}
    assert rows["a"].attempt == "lost" and "b" not in rows
    # The run is left with no live attempt (the reaper here did only half its work):
    # ended, so that no later reaper pass of another test finds it.
    with app.app_context():
        db.session.execute(sa.text("UPDATE apg_run SET status = 'cancelled' WHERE id = :id"),
                           {"id": driver.run_id})
        db.session.commit()
        db.session.remove()
