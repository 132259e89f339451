"""Stops the database asks for, delivered again by the reaper.

A control commits first and tells Redis after (``outbox``): during a Redis outage a
cancel is committed and its stop-job command is lost, and the worker would run the
attempt to its end for a result the engine then ignores. As a send is kept in the
database (a ``queued`` attempt the reaper sends again), so is a stop: an attempt that a
live worker is on (its RQ current job, also for an attempt a job went on with) must
stop when the database says

* it is ``cancelled`` (a cancel) or ``lost`` (the reaper gave up on it: its retry may
  run elsewhere), or
* it is still ``running`` but no longer counts: its task or element has another current
  attempt (a manual retry restarted a failed ``for_each`` while an element ran), or its
  run or task was cancelled.

Each pass asks the live workers what they run (the same worker hashes lost detection
reads) and looks those attempts up in one statement, so the cost is per worker, not
per attempt. A stop is idempotent: a worker that already left the job ignores it
(RQ's ``handle_stop_job_command`` and ``interrupt.request_stop`` check the job id), and
one still inside the task gets ``JobStopped`` (the watchdog kills it if it does not
stop within ``STOP_GRACE``)."""

from __future__ import annotations

import logging

from redis import Redis
from rq import Worker
from rq.command import send_command
from sqlalchemy import select

from app.extensions import DbSession
from capability.dsl.statuses import RunStatus, TaskStatus
from capability.engine.dispatch import JOB_PREFIX
from capability.engine.rq_state import WORKER_KEY, WorkerLiveness
from capability.models import AttemptStatus, Run, TaskAttempt, TaskItem, TaskRun

log = logging.getLogger(__name__)

# Ended by someone other than the worker running it: nothing it does counts any more.
ENDED_ELSEWHERE = (AttemptStatus.CANCELLED, AttemptStatus.LOST)


def must_stop(status: str, counts: bool, run_status: str, task_status: str) -> bool:
    """Whether a worker running an attempt in ``status`` must stop it. ``counts``: it is
    its task's (or element's) current attempt. A ``queued`` or ``scheduled`` attempt is
    being begun (``begin_attempt`` drops it if it must not run), a ``succeeded`` or
    ``failed`` one is being recorded by that worker: both are left alone."""
    if status in ENDED_ELSEWHERE:
        return True
    if status != AttemptStatus.RUNNING:
        return False
    return (not counts or run_status == RunStatus.CANCELLED.value
            or task_status == TaskStatus.CANCELLED.value)


def _running(conn: Redis, workers: WorkerLiveness) -> dict[str, tuple[str, str]]:
    """attempt id -> (worker, job id) for every live worker on an attempt's job (a
    ``delay``'s end or a sub-workflow's follow-up runs no task to stop)."""
    found = {}
    for key in Worker.all_keys(connection=conn):
        name = key[len(WORKER_KEY):]
        job = workers.current_job(name)
        if (workers.state(name) == "alive" and job and job.startswith(JOB_PREFIX)
                and not job.endswith("-end")):
            found[job[len(JOB_PREFIX):]] = (name, job)
    return found


def stop_again(session: DbSession, conn: Redis, workers: WorkerLiveness) -> int:
    """Send a stop-job command for every attempt a live worker runs that the database
    says must stop; how many. Reads in a transaction it ends."""
    running = _running(conn, workers)
    if not running:
        return 0
    rows = session.execute(
        select(TaskAttempt.id, TaskAttempt.status, TaskAttempt.item_id,
               TaskRun.current_attempt_id.label("task_current"),
               TaskItem.current_attempt_id.label("item_current"),
               TaskRun.status.label("task_status"), Run.status.label("run_status"))
        .join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
        .join(Run, TaskRun.run_id == Run.id)
        .outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id)
        .where(TaskAttempt.id.in_(list(running)))
    ).all()
    session.rollback()
    stopped = 0
    for row in rows:
        current = row.item_current if row.item_id else row.task_current
        if not must_stop(row.status, current == row.id, row.run_status, row.task_status):
            continue
        worker, job = running[str(row.id)]
        why = row.status if row.status in ENDED_ELSEWHERE else "running, no longer counting"
        log.warning("reaper: stopping attempt %s (%s) on worker %s: its stop may have "
                    "been lost", row.id, why, worker)
        send_command(conn, worker, "stop-job", job_id=job)
        stopped += 1
    return stopped
