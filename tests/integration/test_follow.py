"""A worker goes on with the attempt its task made ready (jobs.run_attempt): fewer RQ
jobs than tasks, and the followed attempt is still cancelled, reaped and watched like
one that went through Redis."""

from __future__ import annotations

import time

from rq import Queue, Worker
from rq.job import Job

from app.runtime.redis_conn import get_redis
from capability.engine.dispatch import JOB_PREFIX
from tests.support.app import unique
from tests.support.callables import pid_file
from tests.support.engine import child_env
from tests.support.runs import (
    attempts,
    finished,
    get_run,
    make,
    reap_now,
    wait_for,
)
from tests.support.runs import start_id as start


def test_a_chain_runs_in_fewer_rq_jobs_than_tasks(app, client, op, processes):
    wid = make(client, op, [{"id": "t0", "type": "noop", "with": {"value": 0}}] + [
        {"id": f"t{i}", "type": "noop", "depends_on": [f"t{i - 1}"],
         "with": {"value": f"{{{{ tasks.t{i - 1}.output + 1 }}}}"}} for i in range(1, 10)])
    processes("worker")
    conn = get_redis(app)
    wait_for(lambda: Worker.all(connection=conn), 30, "no worker registered")

    def idle() -> Worker | None:
        # Earlier tests may have left jobs behind: count only what this run adds.
        workers = Worker.all(connection=conn)
        if len(workers) != 1:  # an earlier test's worker still leaving, or this one not in
            return None
        busy = workers[0].get_current_job_id() or any(
            Queue(name, connection=conn).count for name in app.config["RQ_QUEUES"])
        return None if busy else workers[0]

    before = wait_for(idle, 60, "the worker did not become idle").successful_job_count
    run_id = start(client, op, wid)
    got = wait_for(lambda: finished(client, op, run_id), 30, "the run did not finish")
    assert got["status"] == "succeeded"
    by_task = {t["task_id"]: t for t in got["tasks"]}
    assert by_task["t9"]["output"] == 9
    workers = Worker.all(connection=get_redis(app))
    assert len(workers) == 1
    assert {a.worker for i in range(10) for a in attempts(app, run_id, f"t{i}")} == {
        workers[0].name}
    # Ten tasks in (well) under ten RQ jobs: the worker went on with the next ones.
    assert workers[0].successful_job_count - before <= 5


def test_a_followed_attempt_is_cancelled_and_never_taken_for_lost(
        app, client, op, processes):
    key = unique("follow")
    wid = make(client, op, [
        {"id": "first", "type": "noop"},
        {"id": "long", "type": "python", "depends_on": ["first"],
         "with": {"callable": "tests.support.callables:sleep_first",
                  "kwargs": {"key": key, "seconds": 30}}},
    ])
    processes("worker")
    wait_for(lambda: Worker.all(connection=get_redis(app)), 30, "no worker registered")
    run_id = start(client, op, wid)
    wait_for(lambda: pid_file(key).exists(), 30, "the long task did not start")
    long = attempts(app, run_id, "long")[0]
    assert long.status == "running"
    jid = JOB_PREFIX + long.id
    # It was never enqueued: the worker that ran `first` went on with it, under its id.
    assert not Job.exists(jid, connection=get_redis(app))
    assert [w.get_current_job_id() for w in Worker.all(connection=get_redis(app))] == [jid]
    # The reaper sees the worker on it: not lost.
    assert reap_now(app).lost == 0
    assert attempts(app, run_id, "long")[0].status == "running"
    t0 = time.monotonic()
    r = client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"])
    assert r.status_code == 200
    wait_for(lambda: all(w.get_current_job_id() is None
                         for w in Worker.all(connection=get_redis(app))), 15,
             "the worker did not stop the followed attempt")
    assert time.monotonic() - t0 < 15
    got = get_run(client, op, run_id)
    assert got["status"] == "cancelled"
    assert attempts(app, run_id, "long")[0].status == "cancelled"


def test_a_followed_attempt_without_a_timeout_gets_the_default_one(
        app, client, op, tmp_path):
    """RQ's alarm is gone once a job goes on with another attempt (this shape is followed:
    see the test above): a task without a timeout of its own is then stopped by
    TASK_DEFAULT_TIMEOUT (here 2 s), not by the watchdog a minute and a half later."""
    import sys

    from tests.support.engine import spawned

    key = unique("default-timeout")
    wid = make(client, op, [
        {"id": "first", "type": "noop"},
        {"id": "long", "type": "python", "depends_on": ["first"],
         "with": {"callable": "tests.support.callables:sleep_first",
                  "kwargs": {"key": key, "seconds": 30}}},
    ])
    env = child_env(app, APG_SYNC_SECURITY="0", TASK_DEFAULT_TIMEOUT="2")
    with spawned(tmp_path, [sys.executable, "-m", "app"], env) as spawn:
        spawn("worker")
        wait_for(lambda: Worker.all(connection=get_redis(app)), 30, "no worker registered")
        run_id = start(client, op, wid)
        got = wait_for(lambda: finished(client, op, run_id), 30, "the run did not finish")
    long = {t["task_id"]: t for t in got["tasks"]}["long"]
    assert got["status"] == "failed" and long["status"] == "failed"
    assert long["error"] == "timed out after 2s (attempt 1)", long["error"]
