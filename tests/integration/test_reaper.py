"""The reaper: runs survive a SIGKILLed worker, a crashed task process and a flushed
Redis; reaping a healthy run changes nothing; a late completion after a loss is ignored."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from sqlalchemy import select

from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.runtime.worker import PID_SPACE_FIELD, AppWorker, pid_alive
from capability.engine import outbox, reaper, rq_state, runner
from capability.engine.dispatch import dispatcher_for
from capability.models import TaskAttempt
from tests.support.app import api_token, auth, unique
from tests.support.callables import pid_file
from tests.support.engine import drain, work_once
from tests.support.runs import (
    attempts,
    finished,
    get_run,
    make,
    reap_now,
    wait_for,
)
from tests.support.runs import start_id as start


def work_until(app, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Work the queues in this process (moving due scheduled jobs too) until ``check``."""
    names = app.config["RQ_QUEUES"]
    scheduler = RQScheduler(names, connection=get_redis(app))
    scheduler.prepare_registries(names)

    def step() -> bool:
        scheduler.enqueue_scheduled_jobs()
        work_once(app)
        return check()

    wait_for(step, timeout, "the run did not get there", step=0.05)


# -- real processes ------------------------------------------------------------------

def long_task(key: str, seconds: float) -> list[dict[str, Any]]:
    return [
        {"id": "long", "type": "python",
         "with": {"callable": "tests.support.callables:sleep_first",
                  "kwargs": {"key": key, "seconds": seconds}},
         "retry": {"max_attempts": 2, "delay": "100ms", "jitter": False}},
        {"id": "after", "type": "noop", "depends_on": ["long"],
         "with": {"value": "{{ tasks.long.output.calls }}"}},
    ]


def task_pid(key: str) -> int:
    """The pid of the process running the `python` task (a child of the worker)."""
    return int(wait_for(lambda: pid_file(key).exists() and pid_file(key).read_text(), 30,
                        "the long task did not start"))


def assert_retried_once(app, client, op, run_id: str, lost_because: str,
                        first: str = "lost") -> None:
    got = get_run(client, op, run_id)
    assert got["status"] == "succeeded", got
    long = got["by_task"]["long"]
    assert long["attempts"] == 2 and long["output"] == {"calls": 2}
    history = long["attempt_history"]
    assert [a["status"] for a in history] == [first, "succeeded"]
    assert lost_because in history[0]["error"] and history[0]["worker"]
    assert got["by_task"]["after"]["output"] == 2
    # The completion is recorded once: one success, and `after` ran once.
    rows = attempts(app, run_id, "long")
    assert sum(a.status == "succeeded" for a in rows) == 1
    assert len(attempts(app, run_id, "after")) == 1


def test_a_sigkilled_worker_loses_its_attempt_and_the_task_is_retried(app, client, op,
                                                                      processes):
    """SIGKILL the worker process mid-task: the task's own process dies with it (it is
    in a process group of its own, so only PR_SET_PDEATHSIG takes it down)."""
    key = unique("kill")
    wid = make(client, op, long_task(key, 8))
    first = processes("worker")
    processes("scheduler")
    run_id = start(client, op, wid)
    child = task_pid(key)
    assert attempts(app, run_id, "long")[0].status == "running"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    # The scheduler's reaper (every 5 s) records the loss; no worker is left to help.
    wait_for(lambda: attempts(app, run_id, "long")[0].status == "lost", 15,
             "the scheduler did not reap the attempt")
    assert time.monotonic() - killed < 12  # the next pass, not the ~90 s key expiry
    processes("worker")
    wait_for(lambda: finished(client, op, run_id), 60, "the run did not finish")
    wait_for(lambda: not pid_alive(child), 5, "the task's process outlived its worker")
    assert_retried_once(app, client, op, run_id, "died while running it")


def test_a_starting_worker_reaps_before_it_works(app, client, op, processes):
    run_id = start(client, op, one_task(client, op))
    attempt = attempts(app, run_id, "a")[0]
    worker = _live_worker(app)
    _begin_on(app, attempt.id, worker)
    get_redis(app).hset(worker.key, "pid", _dead_pid())
    burst = processes("worker --burst")
    assert burst.wait(timeout=60) == 0
    assert attempts(app, run_id, "a")[0].status == "lost"
    assert drain(app, run_id) == "succeeded"


def test_a_killed_task_process_fails_only_its_attempt(app, client, op, processes):
    """The OOM killer (or a crash) takes the `python` task's process: the attempt fails
    at once with what killed it, is retried, and the worker lives on."""
    key = unique("crash")
    wid = make(client, op, long_task(key, 30))
    worker = processes("worker")
    processes("scheduler")  # the retry waits in RQ's scheduled registry
    run_id = start(client, op, wid)
    child = task_pid(key)
    assert child != worker.pid
    os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: finished(client, op, run_id), 60, "the run did not finish")
    assert time.monotonic() - killed < 10
    assert_retried_once(app, client, op, run_id, "killed by SIGKILL", first="failed")
    assert worker.poll() is None


# -- Redis loses everything ------------------------------------------------------------

def test_redis_flushed_mid_run_is_rebuilt_from_the_database(app, client, op):
    key = unique("flush")
    wid = make(client, op, [
        {"id": "first", "type": "noop", "with": {"value": 1}},
        {"id": "flaky", "type": "python", "depends_on": ["first"],
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": key, "fail_times": 1}},
         "retry": {"max_attempts": 2, "delay": "2s", "jitter": False}},
        {"id": "pause", "type": "delay", "depends_on": ["flaky"], "with": {"seconds": 1.5}},
        {"id": "last", "type": "noop", "depends_on": ["pause"]},
    ])
    conn = get_redis(app)
    run_id = start(client, op, wid)

    def status(task_id: str) -> list[str]:
        return [a.status for a in attempts(app, run_id, task_id)]

    # 1. A queued attempt: its job vanishes with the flush and is sent again.
    conn.flushdb()
    assert reap_now(app).resent >= 1
    work_until(app, lambda: status("flaky") == ["failed", "scheduled"])
    # 2. A retry waiting in the scheduled registry: sent again with the rest of its wait.
    retry = attempts(app, run_id, "flaky")[1]
    conn.flushdb()
    assert reap_now(app).resent >= 1
    job_id = reaper.job_id(retry.id)
    assert job_id in ScheduledJobRegistry("default", connection=conn).get_job_ids()
    work_until(app, lambda: status("pause") == ["running"])
    # 3. A `delay` waiting for its end: the end is sent again, the wait is kept.
    conn.flushdb()
    assert reap_now(app).ends_resent == 1
    assert drain(app, run_id) == "succeeded"
    got = get_run(client, op, run_id)
    assert [a["status"] for a in got["by_task"]["flaky"]["attempt_history"]] == [
        "failed", "succeeded"]
    pause = got["by_task"]["pause"]
    waited = (dt.datetime.fromisoformat(pause["finished_at"])
              - dt.datetime.fromisoformat(pause["started_at"])).total_seconds()
    assert waited >= 1.4 and pause["attempts"] == 1
    assert all(len(attempts(app, run_id, t)) == 1 for t in ("first", "pause", "last"))


def test_a_lost_sub_workflow_follow_up_is_sent_again(app, client, op):
    """The job telling a parent that its child run ended vanishes: the parent's
    attempt would wait forever."""
    from tests.support.engine import AppSimpleWorker

    child = unique("child")
    r = client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"],
        "definition": {"name": child, "tasks": [
            {"id": "greet", "type": "noop", "queue": "low", "with": {"value": "hi"}}]}})
    assert r.status_code == 201, r.get_json()
    run_id = start(client, op, make(client, op, [
        {"id": "sub", "type": "workflow", "with": {"workflow": child}}]))
    conn = get_redis(app)

    def burst(queue: str) -> None:
        worker = AppSimpleWorker([Queue(queue, connection=conn)], connection=conn)
        worker.flask_app = app
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")

    burst("default")  # the parent's attempt starts the child run and waits
    burst("low")  # the child ends; its follow-up waits in `default`
    assert [a.status for a in attempts(app, run_id, "sub")] == ["waiting"]
    conn.flushdb()
    assert reap_now(app).followups_resent >= 1
    assert drain(app, run_id) == "succeeded"
    assert get_run(client, op, run_id)["by_task"]["sub"]["output"] == {"greet": "hi"}


def test_a_job_stuck_in_no_queue_is_sent_again(app, client, op):
    wid = make(client, op, [{"id": "a", "type": "noop", "with": {"value": "x"}}])
    run_id = start(client, op, wid)
    attempt = attempts(app, run_id, "a")[0]
    conn = get_redis(app)
    Queue("default", connection=conn).remove(reaper.job_id(attempt.id))  # hash stays "queued"
    assert reap_now(app).resent >= 1
    assert drain(app, run_id) == "succeeded"
    assert len(attempts(app, run_id, "a")) == 1


# -- healthy runs, lost attempts, late completions -------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _live_worker(app) -> AppWorker:
    """This process registered as an RQ worker (its pid is alive)."""
    conn = get_redis(app)
    worker = AppWorker([Queue("default", connection=conn)], connection=conn, worker_ttl=30)
    worker.register_birth()
    return worker


def _begin_on(app, attempt_id: str, worker: AppWorker) -> None:
    """What a worker does when it takes a job: started in RQ, running in the database."""
    conn = get_redis(app)
    job_id = reaper.job_id(attempt_id)
    Queue("default", connection=conn).remove(job_id)
    Job.fetch(job_id, connection=conn).set_status(JobStatus.STARTED)
    conn.hset(Job.key_for(job_id), "worker_name", worker.name)
    worker.set_current_job_id(job_id)
    with app.app_context():
        outbox.begin(db.session, dispatcher_for(app))
        assert isinstance(runner.begin_attempt(db.session, attempt_id, worker.name,
                                               exclusive=True), runner.AttemptContext)
        outbox.commit(db.session)
        db.session.remove()


def one_task(client, op) -> str:
    return make(client, op, [
        {"id": "a", "type": "noop", "with": {"value": "ok"},
         "retry": {"max_attempts": 2, "delay": "50ms", "jitter": False}},
    ])


def test_reaping_a_healthy_run_changes_nothing(app, client, op):
    run_id = start(client, op, one_task(client, op))
    conn = get_redis(app)
    attempt = attempts(app, run_id, "a")[0]
    queue_key = Queue("default", connection=conn).key
    for _ in range(2):
        reap_now(app)
    assert [a.status for a in attempts(app, run_id, "a")] == ["queued"]
    assert conn.lrange(queue_key, 0, -1).count(reaper.job_id(attempt.id).encode()) == 1
    # Running on a live worker: untouched, however often reaped.
    worker = _live_worker(app)
    try:
        _begin_on(app, attempt.id, worker)
        for _ in range(2):
            report = reap_now(app)
            assert worker.name not in report.dead_workers
        assert [a.status for a in attempts(app, run_id, "a")] == ["running"]
    finally:
        worker.register_death()
    with app.app_context():
        outbox.begin(db.session, dispatcher_for(app))
        assert runner.complete_attempt(db.session, attempt.id, runner.Outcome.success("ok"))
        outbox.commit(db.session)
        db.session.remove()
    assert get_run(client, op, run_id)["status"] == "succeeded"


def test_a_late_completion_after_a_loss_is_ignored(app, client, op):
    run_id = start(client, op, one_task(client, op))
    conn = get_redis(app)
    attempt = attempts(app, run_id, "a")[0]
    worker = _live_worker(app)
    _begin_on(app, attempt.id, worker)
    conn.hset(worker.key, "pid", _dead_pid())  # the worker dies (same machine)
    report = reap_now(app)
    assert worker.name in report.dead_workers and report.lost >= 1
    lost = attempts(app, run_id, "a")
    assert [a.status for a in lost] == ["lost", "scheduled"]
    assert f"worker {worker.name} died" in (lost[0].error or "")
    # The dead worker is unregistered at once, not when its key expires.
    assert worker.key not in [k.decode() for k in conn.smembers("rq:workers")]
    # The worker reports after all: too late, nothing changes.
    with app.app_context():
        outbox.begin(db.session, dispatcher_for(app))
        assert not runner.complete_attempt(db.session, attempt.id,
                                           runner.Outcome.success("late"))
        outbox.rollback(db.session)
        db.session.remove()
    again = attempts(app, run_id, "a")
    assert [(a.status, a.error) for a in again] == [(a.status, a.error) for a in lost]
    assert reap_now(app).lost == 0  # already recorded: a second pass does nothing
    assert drain(app, run_id) == "succeeded"
    got = get_run(client, op, run_id)
    assert got["by_task"]["a"]["output"] == "ok" and got["by_task"]["a"]["attempts"] == 2


def test_workers_elsewhere_count_as_alive_until_their_hash_is_gone(app, client, op):
    conn = get_redis(app)
    run_id = start(client, op, one_task(client, op))
    attempt = attempts(app, run_id, "a")[0]
    worker = _live_worker(app)
    _begin_on(app, attempt.id, worker)
    # On another machine: its pid means nothing here, its heartbeat keeps it alive.
    conn.hset(worker.key, mapping={"pid": _dead_pid(), PID_SPACE_FIELD: "elsewhere/1"})
    assert worker.name not in reap_now(app).dead_workers
    assert attempts(app, run_id, "a")[0].status == "running"
    # Its hash vanishes (expired, or Redis lost it): alive for WORKER_GONE_AFTER more,
    # as a live worker writes it back within a heartbeat; then lost.
    conn.delete(worker.key)
    now = dt.datetime.now(dt.UTC)
    assert reap_now(app, now=now).lost == 0
    assert attempts(app, run_id, "a")[0].status == "running"
    later = now + dt.timedelta(seconds=rq_state.WORKER_GONE_AFTER + 1)
    assert reap_now(app, now=later).lost >= 1
    assert [a.status for a in attempts(app, run_id, "a")] == ["lost", "scheduled"]
    assert drain(app, run_id) == "succeeded"


def test_reap_command_prints_its_report(app):
    result = app.test_cli_runner().invoke(args=["reap", "--grace", "5"])
    assert result.exit_code == 0, result.output
    assert "checked" in result.output or "another reaper" in result.output


def test_the_reaper_is_hooked_into_workers_and_schedulers(app):
    from app.runtime.worker import runtime_hooks

    hooks = runtime_hooks(app)
    assert hooks.worker_start and hooks.maintenance



def test_the_reaper_sees_the_attempts_that_count(app, client, factory):
    """Which live attempts a pass looks at: an element's current attempt, an undo step's
    (with its own type), none of a paused run's waiting ones."""
    from capability.engine import controls
    from tests.support.driver import Driver, fail, noop, unit

    team = factory.team()
    author = {"team": team, "path": "general",
              "h": auth(api_token(client, factory.user("Author", teams=[team])["username"]))}

    def candidates(run_id: str) -> list[tuple[str, str, float]]:
        with app.app_context():
            found = reaper._candidates(db.session, dispatcher_for(app))
            db.session.remove()
        mine = {s.attempt_id for s in run_sends[run_id]}
        return sorted((c.status, c.task_type, c.timeout) for c in found if c.id in mine)

    elements = Driver(app, client, author, [
        noop("a"), noop("each", "a", for_each="{{ [1, 2, 3] }}", max_parallel=2,
                        timeout="7s"),
    ])
    elements.step()
    elements.step()  # the job that makes the elements (foreach.start)
    run_sends = {elements.run_id: list(elements.fifo.items)}
    assert candidates(elements.run_id) == [("queued", "noop", 7.0)] * 2
    with app.app_context(), unit(db.session, elements.fifo):
        controls.pause(db.session, elements.run_id)
    assert candidates(elements.run_id) == []

    undo = Driver(app, client, author, [
        noop("x", compensate={"type": "transform", "with": {"value": 1}}),
        fail("bad", "x"),
    ])
    undo.step()
    undo.step()  # bad fails: the run compensates x
    run_sends[undo.run_id] = list(undo.fifo.items)
    assert candidates(undo.run_id) == [("queued", "transform", 3600.0)]


def test_a_pass_leaves_out_attempts_within_the_grace(app, client, factory):
    """Queued attempts younger than the grace cannot be acted on: a pass does not read
    them (a fan-out's fresh attempts), running ones it always reads."""
    from tests.support.driver import Driver, noop

    team = factory.team()
    author = {"team": team, "path": "general",
              "h": auth(api_token(client, factory.user("Author", teams=[team])["username"]))}
    run = Driver(app, client, author, [noop("a"), noop("b")])
    mine = {s.attempt_id for s in run.fifo.items}
    with app.app_context():
        created = {a.id: a.created_at for a in db.session.execute(
            select(TaskAttempt).where(TaskAttempt.id.in_(mine))).scalars()}
        dispatcher = dispatcher_for(app)

        def seen(cutoff: dt.datetime) -> set[str]:
            found = reaper._candidates(db.session, dispatcher, cutoff)
            return {c.id for c in found if c.id in mine}

        newest = max(created.values())
        assert seen(newest + dt.timedelta(seconds=1)) == mine
        assert seen(min(created.values()) - dt.timedelta(seconds=1)) == set()
        db.session.remove()


def test_recovered_attempts_go_to_the_front_of_their_queue(app, client, op):
    """A lost attempt's retry and a re-sent attempt do not wait behind a busy queue."""
    conn = get_redis(app)
    queue = Queue("default", connection=conn)
    lost_run = start(client, op, one_task(client, op))
    resent_run = start(client, op, one_task(client, op))
    attempt = attempts(app, lost_run, "a")[0]
    vanished = attempts(app, resent_run, "a")[0]
    worker = _live_worker(app)
    _begin_on(app, attempt.id, worker)
    Job.fetch(reaper.job_id(vanished.id), connection=conn).delete(remove_from_queue=True)
    busy = [queue.enqueue("tests.support.callables.add", 1, 2) for _ in range(100)]
    scheduler = RQScheduler(["default"], connection=conn)
    scheduler.prepare_registries(["default"])

    def ahead_of_the_queue(attempt_id: str) -> bool:
        ids = queue.get_job_ids()
        jid = reaper.job_id(attempt_id)
        return jid in ids and ids.index(jid) < min(ids.index(job.id) for job in busy)

    try:
        conn.hset(worker.key, "pid", _dead_pid())  # the worker dies
        report = reap_now(app)
        assert report.lost >= 1 and report.resent >= 1
        assert ahead_of_the_queue(vanished.id)
        retry = attempts(app, lost_run, "a")[1]
        assert retry.status == "scheduled"  # its backoff (50 ms) in the scheduled registry

        def moved() -> bool:
            scheduler.enqueue_scheduled_jobs()
            return reaper.job_id(retry.id) in queue.get_job_ids()

        wait_for(moved, 10, "the retry did not reach its queue")
        assert ahead_of_the_queue(retry.id)
    finally:
        for job in busy:
            job.delete(remove_from_queue=True)
    assert drain(app, lost_run) == "succeeded"
    assert drain(app, resent_run) == "succeeded"
