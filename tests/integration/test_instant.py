"""Instant types (noop, transform, fail) begin, run and are recorded in one transaction;
every other type begins in a transaction of its own first (its `running` is visible)."""

from __future__ import annotations

from sqlalchemy import event

from app.extensions import db
from capability.engine import jobs, runner
from capability.models import TaskAttempt
from tests.support.driver import Driver, noop, unit


def commits_during(app, fn) -> int:
    seen: list[int] = []

    def count(conn) -> None:
        seen.append(1)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "commit", count)
    try:
        fn()
    finally:
        event.remove(engine, "commit", count)
    return len(seen)


def test_a_noop_hop_is_one_transaction_and_a_python_or_templated_hop_two(app, client, author):
    run = Driver(app, client, author, [
        noop("first"),
        noop("second", "first", kind="python",
             with_={"callable": "tests.support.callables:add", "kwargs": {"a": 1, "b": 2}}),
        noop("third", "second", kind="transform", with_={"value": "{{ tasks.second.output }}"}),
    ])
    first = run.fifo.items.popleft()
    assert first.instant

    def hop(send) -> None:
        with app.app_context():
            box = jobs.run_one(db.session, run.fifo, send.attempt_id, send.instant, "test")
            box.deliver()
            db.session.remove()

    assert commits_during(app, lambda: hop(first)) == 1
    second = run.fifo.items.popleft()
    assert not second.instant
    assert commits_during(app, lambda: hop(second)) == 2  # begin, then the result
    third = run.fifo.items.popleft()
    # Its `with` holds an expression: never evaluated under the run's lock, so its begin
    # is committed before it is rendered (issue 11, item 3).
    assert not third.instant
    assert commits_during(app, lambda: hop(third)) == 2
    with app.app_context():
        rows = db.session.query(TaskAttempt).filter(
            TaskAttempt.id.in_([first.attempt_id, second.attempt_id, third.attempt_id])).all()
        assert {r.status for r in rows} == {"succeeded"}
        assert all(r.started_at and r.finished_at and r.started_at <= r.finished_at
                   for r in rows)
        db.session.remove()
    assert run.status() == "succeeded"
    assert run.tasks()["third"].output == 3


def test_a_failing_instant_task_is_retried_and_a_stale_one_does_nothing(
        app, client, author):
    run = Driver(app, client, author, [
        noop("boom", kind="fail", with_={"message": "no"},
             retry={"max_attempts": 2, "delay": "1s", "jitter": False}),
    ])
    send = run.fifo.items.popleft()
    with app.app_context():
        box = jobs.run_one(db.session, run.fifo, send.attempt_id, True, "test")
        db.session.remove()
        sends = box.sends
        assert len(sends) == 1 and sends[0].delay == 1.0 and sends[0].instant
        # The same job again (a duplicate delivery): nothing begins, nothing changes.
        assert jobs.run_one(db.session, run.fifo, send.attempt_id, True, "test") is None
        db.session.remove()
        with unit(db.session, run.fifo):
            assert runner.begin_attempt(db.session, send.attempt_id, "x", exclusive=True) is None
        db.session.remove()
