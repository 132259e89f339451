"""Stops are durable: a control commits first and tells Redis after, so a cancel made
while the web cannot reach Redis is committed and its stop-job command is lost. What
the database says must stop (an attempt a live worker is on while it is cancelled,
lost or superseded) is stopped again by the next reaper pass."""

from __future__ import annotations

import json
import socket
import time

import redis
from rq import Queue, Worker
from sqlalchemy import update

from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.runtime.worker import AppWorker
from capability.engine import reaper
from capability.models import AttemptStatus, Run, TaskAttempt, TaskRun
from tests.support.runs import attempts, get_run, make, reap_now, start_id, wait_for


def _dead_redis() -> redis.Redis:
    """A Redis client of a port nobody listens on: every command fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)


def _on_job(conn: redis.Redis, job_id: str) -> bool:
    return any(w.get_current_job_id() == job_id for w in Worker.all(connection=conn))


def test_a_cancel_whose_stop_was_lost_is_stopped_by_the_next_pass(
        app, client, op, processes, monkeypatch):
    conn = get_redis(app)
    wid = make(client, op, [
        {"id": "long", "type": "python",
         "with": {"callable": "tests.support.callables:sleep", "kwargs": {"seconds": 120}}}])
    processes("worker")
    run_id = start_id(client, op, wid)
    wait_for(lambda: (found := attempts(app, run_id, "long")) and found[0].status == "running",
             60, "the long task runs")
    job_id = reaper.job_id(attempts(app, run_id, "long")[0].id)
    wait_for(lambda: _on_job(conn, job_id), 30, "a worker is on the job")

    # The web cannot reach Redis while the cancel is sent: it commits, the stop is lost.
    monkeypatch.setitem(app.extensions, "apg_redis", _dead_redis())
    r = client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"])
    assert r.status_code == 200, r.get_json()
    monkeypatch.undo()
    assert get_run(client, op, run_id)["status"] == "cancelled"
    assert attempts(app, run_id, "long")[0].status == "cancelled"
    time.sleep(2)
    assert _on_job(conn, job_id)  # nothing told the worker: it sleeps on

    # Redis answers again: the database says the attempt is cancelled, a live worker is
    # on it, so the pass stops it (the task would sleep two minutes).
    report = reap_now(app)
    wait_for(lambda: not _on_job(conn, job_id), 20, "the worker leaves the cancelled attempt")
    assert report.stopped == 1, report
    assert attempts(app, run_id, "long")[0].status == "cancelled"
    assert reap_now(app).stopped == 0  # nothing left to stop


def test_a_superseded_attempt_is_stopped_and_a_counting_one_is_not(app, client, op):
    """A `running` attempt that no longer counts (its task or element has another
    current attempt, e.g. after a manual retry of a failed for_each) gets a stop-job
    command; the attempt that counts is left alone."""
    conn = get_redis(app)
    run_id = start_id(client, op, make(client, op, [{"id": "a", "type": "noop"}]))
    attempt = attempts(app, run_id, "a")[0]
    job_id = reaper.job_id(attempt.id)
    Queue("default", connection=conn).remove(job_id)  # no worker here runs it
    worker = AppWorker([Queue("default", connection=conn)], connection=conn, worker_ttl=30)
    worker.register_birth()  # this process, alive
    worker.set_current_job_id(job_id)
    listener = conn.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(worker.pubsub_channel_name)

    def commands() -> list[dict[str, str]]:
        got = []
        while (message := listener.get_message(timeout=0.5)) is not None:
            got.append(json.loads(message["data"]))
        return got

    def set_rows(current: str | None) -> None:
        with app.app_context():
            db.session.execute(update(TaskAttempt).where(TaskAttempt.id == attempt.id).values(
                status=AttemptStatus.RUNNING, worker=worker.name))
            db.session.execute(update(TaskRun).where(TaskRun.id == attempt.task_run_id)
                               .values(status="running", current_attempt_id=current))
            db.session.execute(update(Run).where(Run.id == run_id).values(status="running"))
            db.session.commit()
            db.session.remove()

    try:
        set_rows(current=attempt.id)
        reap_now(app)
        assert commands() == []
        set_rows(current=None)  # superseded: its result would be ignored
        report = reap_now(app)
        assert commands() == [{"command": "stop-job", "job_id": job_id}]
        assert report.stopped == 1
    finally:
        listener.close()
        worker.register_death()
