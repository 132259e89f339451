"""The engine's own bookkeeping survives a database connection that dies under it (begin,
record, an instant hop): it is done again on a fresh connection and costs the task no
attempt; and an attempt a job went on with (follow-up) whose job then fails is recorded
lost at the next reaper pass, as fast as any other."""

from __future__ import annotations

import time

from rq import Worker
from rq.command import send_command
from rq.job import Job
from sqlalchemy.exc import OperationalError

from app.runtime.redis_conn import get_redis
from capability.engine import instant, outbox, runner, success
from capability.engine.dispatch import JOB_PREFIX
from tests.support.app import unique
from tests.support.callables import pid_file
from tests.support.engine import drain, work_once
from tests.support.faults import breaking_once, run_locked, terminate_waiters_until
from tests.support.runs import attempts, finished, get_run, make, reap_now, wait_for
from tests.support.runs import start_id as start

ADD = {"id": "a", "type": "python",
       "with": {"callable": "tests.support.callables:add", "kwargs": {"a": 1, "b": 2}}}


def _one_attempt(app, client, op, run_id: str, output: object) -> None:
    got = get_run(client, op, run_id)
    assert got["status"] == "succeeded", got
    task = got["by_task"]["a"]
    assert task["attempts"] == 1 and task["output"] == output
    assert [a.status for a in attempts(app, run_id, "a")] == ["succeeded"]


def test_a_connection_reset_while_beginning_costs_no_attempt(app, client, op, monkeypatch):
    run_id = start(client, op, make(client, op, [ADD]))
    step = breaking_once(runner.begin_attempt)
    monkeypatch.setattr(runner, "begin_attempt", step)
    work_once(app)  # one pass: nothing else (no reaper) could rescue the attempt
    assert len(step.calls) >= 2  # broken once, then begun on a fresh connection
    _one_attempt(app, client, op, run_id, 3)


def test_a_connection_reset_while_recording_costs_no_attempt(app, client, op, monkeypatch):
    """The task succeeded at its receiver: a reset while its result is recorded must not
    fail it (here it has one attempt, no retry) nor run it again."""
    run_id = start(client, op, make(client, op, [ADD]))
    # A success is recorded by engine.success on PostgreSQL, by complete_attempt elsewhere.
    owner = success if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql") \
        else runner
    name = "record" if owner is success else "complete_attempt"
    step = breaking_once(getattr(owner, name))
    monkeypatch.setattr(owner, name, step)
    work_once(app)
    assert len(step.calls) == 2
    _one_attempt(app, client, op, run_id, 3)


def test_a_begin_whose_answer_was_lost_goes_on(app, client, op, monkeypatch):
    """The begin's commit landed, then its connection died before the answer came back:
    the next try finds the attempt running on this very worker and goes on with it."""
    run_id = start(client, op, make(client, op, [ADD]))
    original, calls = outbox.commit, []

    def commit(session, deliver=True):  # type: ignore[no-untyped-def]
        box = original(session, deliver)
        calls.append(1)
        if len(calls) == 1:  # the begin's
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"),
                                   connection_invalidated=True)
        return box

    monkeypatch.setattr(outbox, "commit", commit)
    work_once(app)
    assert len(calls) == 3  # the begin (answer lost), the begin again, the record
    _one_attempt(app, client, op, run_id, 3)


def test_a_connection_reset_while_storing_elements_is_tried_again(app, client, op,
                                                                 monkeypatch):
    """A for_each task's list is evaluated outside any transaction, then its elements
    are stored under the run's lock: that step is bookkeeping too, done again on a fresh
    connection."""
    run_id = start(client, op, make(client, op, [
        {"id": "a", "type": "noop", "for_each": [1, 2], "with": {"value": "{{ item }}"}}]))
    step = breaking_once(runner.record_expansion)
    monkeypatch.setattr(runner, "record_expansion", step)
    assert drain(app, run_id) == "succeeded"
    assert len(step.calls) == 2
    got = get_run(client, op, run_id)
    assert got["status"] == "succeeded", got
    task = got["by_task"]["a"]
    assert task["output"] == [1, 2] and task["attempts"] == 2  # one per element
    assert sorted(a.status for a in attempts(app, run_id, "a")) == ["succeeded"] * 2


def test_a_connection_reset_in_an_instant_hop_costs_no_attempt(app, client, op, monkeypatch):
    run_id = start(client, op, make(client, op, [
        {"id": "a", "type": "noop", "with": {"value": "ok"}}]))
    step = breaking_once(instant.run_attempt)
    monkeypatch.setattr(instant, "run_attempt", step)
    work_once(app)
    assert len(step.calls) == 2
    _one_attempt(app, client, op, run_id, "ok")


def test_a_followed_attempt_whose_job_fails_is_lost_at_the_next_pass(app, client, op,
                                                                      processes):
    """The job that ran `first` goes on with `long` (follow-up), then fails while
    recording it: on PostgreSQL its connection is terminated at every try (past the
    bookkeeping's retries), as a database going away does; SQLite has no server, so
    there RQ's stop-job command ends the job without a cancel. Either way the worker
    lives, idle, `long` is `running` and has no RQ job of its own: the reaper must not
    wait for its timeout (none here: TASK_DEFAULT_TIMEOUT, an hour) to see it lost."""
    key = unique("followed")
    postgres = app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    wid = make(client, op, [
        {"id": "first", "type": "noop"},
        {"id": "long", "type": "python", "depends_on": ["first"],
         "with": {"callable": "tests.support.callables:sleep_first",
                  "kwargs": {"key": key, "seconds": 3 if postgres else 60}},
         "retry": {"max_attempts": 2, "delay": "100ms", "jitter": False}},
    ])
    conn = get_redis(app)
    processes("worker")
    wait_for(lambda: Worker.all(connection=conn), 30, "no worker registered")
    run_id = start(client, op, wid)
    wait_for(lambda: pid_file(key).exists(), 30, "the long task did not start")
    long = attempts(app, run_id, "long")[0]
    jid = JOB_PREFIX + long.id
    assert long.status == "running"
    assert not Job.exists(jid, connection=conn)  # followed: the job of `first` runs it
    (worker,) = Worker.all(connection=conn)
    assert worker.get_current_job_id() == jid

    def idle() -> bool:
        return all(w.get_current_job_id() is None for w in Worker.all(connection=conn))

    if postgres:
        with run_locked(app.config["SQLALCHEMY_DATABASE_URI"], run_id) as terminate:
            assert terminate_waiters_until(terminate, idle, 60) >= 1
    else:
        send_command(conn, worker.name, "stop-job", job_id=jid)
        wait_for(idle, 30, "the job did not end")
    assert attempts(app, run_id, "long")[0].status == "running"  # nobody recorded it
    assert [w.name for w in Worker.all(connection=conn)] == [worker.name]  # alive

    t0 = time.monotonic()
    wait_for(lambda: reap_now(app).lost or attempts(app, run_id, "long")[0].status == "lost",
             10, "the followed attempt was not recorded lost")
    assert time.monotonic() - t0 < 10
    lost = attempts(app, run_id, "long")[0]
    assert lost.status == "lost" and "ended without reporting it" in (lost.error or "")
    processes("scheduler")  # the retry waits 100 ms in RQ's scheduled registry
    got = wait_for(lambda: finished(client, op, run_id), 60, "the run did not finish")
    assert got["status"] == "succeeded", got
    assert [a.status for a in attempts(app, run_id, "long")] == ["lost", "succeeded"]
