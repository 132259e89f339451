"""Workers and schedulers started on their own outlive Redis going away: they try again
with a capped backoff, logging each failed try, and carry on once it is back (a worker
registers again, runs jobs; a scheduler moves due retries) without ever exiting. And
`flask --app app up` starts again a child that exits anyway."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

import redis
from rq import Worker

from app.extensions import db
from app.runtime import up
from app.security.actor import SYSTEM
from capability.engine.dispatch import Dispatcher
from capability.engine.settings import EngineSettings
from capability.runs import service as runs
from tests.support.app import unique
from tests.support.engine import child_env, run_status, spawned
from tests.support.redis_server import RedisServer
from tests.support.runs import make, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_on(app, conn: redis.Redis, wid: str) -> str:
    """Start a run whose tasks go to the Redis at ``conn``."""
    with app.app_context():
        run, _ = runs.start_run(db.session, SYSTEM,
                                Dispatcher(conn, EngineSettings.from_config(app.config)), wid)
        run_id = str(run.id)
        db.session.remove()
        return run_id


def test_a_worker_and_a_scheduler_outlive_a_redis_outage(app, client, op, tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    conn = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    env = child_env(app, REDIS_URL=server.url, REDIS_RECONNECT_MAX="2")
    try:
        with spawned(tmp_path, [sys.executable, "-m", "app"], env, cwd=str(ROOT)) as spawn:
            # Two workers: one idle when Redis goes (on a queue nothing is sent to), one
            # busy (the database may hold other tests' queued runs: the reapers send
            # them here, and it runs them too).
            workers = [spawn("worker --queues idle"), spawn("worker")]
            scheduler = spawn("scheduler")

            def alive() -> bool:
                return all(p.poll() is None for p in [*workers, scheduler])

            wait_for(lambda: len(Worker.all(connection=conn)) == 2, 60, "the workers register")
            wait_for(lambda: conn.exists("rq:scheduler-lock:default"), 60,
                     "the scheduler takes its locks")
            # The worker is busy when Redis goes: the job's end cannot be told to RQ.
            busy = start_on(app, conn, make(client, op, [
                {"id": "slow", "type": "python",
                 "with": {"callable": "tests.support.callables:sleep",
                          "kwargs": {"seconds": 3}}}]))
            wait_for(lambda: run_status(app, busy) == "running", 60, "the slow task runs")
            server.stop()  # a crash: Redis and everything in it are gone
            time.sleep(6)  # several failed tries each; the slow task ended meanwhile
            assert alive()
            server.start()
            wait_for(lambda: len(Worker.all(connection=conn)) == 2, 60,
                     "the workers register again")

            # A task that fails once and is retried after a delay: the worker runs it,
            # the scheduler moves the retry onto its queue.
            wid = make(client, op, [
                {"id": "flaky", "type": "python",
                 "with": {"callable": "tests.support.callables:flaky",
                          "kwargs": {"key": unique("flaky"), "fail_times": 1}},
                 "retry": {"max_attempts": 2, "delay": "200ms", "jitter": False}}])
            run_id = start_on(app, conn, wid)
            wait_for(lambda: run_status(app, run_id) == "succeeded", 60, "the run succeeds")
            assert run_status(app, busy) == "succeeded"
            assert alive()
        idle_log, busy_log, scheduler_log = (
            (tmp_path / name).read_text()
            for name in ("worker-0.log", "worker-1.log", "scheduler-2.log"))
        # The idle one waited in RQ's loop, then registered again in the Redis that came
        # back empty.
        assert "could not connect to Redis" in idle_log, idle_log
        assert "registering again" in idle_log, idle_log
        # The busy one's round ended on the outage (RQ could not record the job's end):
        # a new worker took over in the same process once Redis answered.
        assert "stopped working" in busy_log, busy_log
        assert "Redis unreachable" in busy_log and "Redis answers again" in busy_log, busy_log
        failed = re.findall(r"Redis unreachable .*; try (\d+) failed, next in (\d+)s",
                            scheduler_log)
        assert len(failed) >= 2, scheduler_log
        assert [int(wait) for _, wait in failed][:3] == [1, 2, 2]  # capped at 2 here
        assert "Redis answers again" in scheduler_log, scheduler_log
    finally:
        server.stop()
        conn.close()


def test_a_stop_during_an_outage_is_not_held_up_by_it(app, tmp_path):
    """SIGTERM while Redis is away: a worker and a scheduler end at once, cleanly (RQ's
    worker asked Redis whether it was busy, and took the failure for one more lost
    connection)."""
    server = RedisServer(tmp_path)
    server.start()
    conn = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    env = child_env(app, REDIS_URL=server.url, REDIS_RECONNECT_MAX="2")
    try:
        with spawned(tmp_path, [sys.executable, "-m", "app"], env, cwd=str(ROOT)) as spawn:
            worker, scheduler = spawn("worker --queues idle"), spawn("scheduler")
            wait_for(lambda: len(Worker.all(connection=conn)) == 1, 60, "the worker registers")
            wait_for(lambda: conn.exists("rq:scheduler-lock:idle") or conn.exists(
                "rq:scheduler-lock:default"), 60, "the scheduler takes its locks")
            server.stop()
            time.sleep(3)
            for proc in (worker, scheduler):
                proc.terminate()
            for proc in (worker, scheduler):
                assert proc.wait(timeout=15) == 0
    finally:
        server.stop()
        conn.close()


def test_up_starts_again_a_child_that_exits_with_a_growing_pause(monkeypatch, caplog):
    """A child that keeps exiting at once is started again after 2, 4, 8 ... seconds; a
    killed one comes back."""
    monkeypatch.setattr(up, "CHILD_COMMAND", [sys.executable, "-c"])
    env = dict(os.environ)
    steady = up._Child(["import time; time.sleep(120)"], env)
    failing = up._Child(["raise SystemExit(3)"], env)
    supervisor = up._Supervisor([steady, failing])
    caplog.set_level(logging.WARNING, logger=up.log.name)
    supervisor.start()
    try:
        assert steady.proc is not None
        first = steady.proc.pid
        steady.proc.kill()
        wait_for(lambda: steady.alive() and steady.proc is not None and steady.proc.pid != first,
                 15, "the killed child is started again")
        wait_for(lambda: failing.quick_deaths >= 3, 30, "three quick exits")
    finally:
        supervisor.stop(grace=5)
    pauses = [int(m) for m in re.findall(r"exited with code 3; starting it again in (\d+)s",
                                          caplog.text)]
    assert pauses[:3] == [2, 4, 8], caplog.text
    assert "exited with code -9; starting it again" in caplog.text
