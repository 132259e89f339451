"""Handing attempts to RQ, always after the transaction that created them committed
(``outbox``), and telling the browsers watching a run.

``dispatcher_for(app)`` is the one way to get a dispatcher: the app's Redis, its
``EngineSettings`` and how it publishes live updates (at once in a request, coalesced
in a worker). The engine knows nothing of how a run's state is built and sent: the
capability installs that (``capability.blueprint``: ``capability.live.publish``) under
``PUBLISHER``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Queue, Worker
from rq.command import send_command, send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from capability.engine.settings import EngineSettings

if TYPE_CHECKING:
    from flask import Flask

JOB_PREFIX = "apg-attempt-"
# app.extensions[PUBLISHER](app, run_id, coalesce): tells a run's watchers it changed.
PUBLISHER = "apg_live_publisher"


@dataclass(frozen=True)
class Send:
    attempt_id: str
    queue: str
    delay: float = 0.0  # seconds to wait in RQ's scheduled registry (retries, delays)
    timeout: float | None = None
    finish_delay: bool = False  # the end of a `delay` task, not a new attempt
    child_run: str | None = None  # a finished sub-workflow run: tell its parent
    instant: bool = False  # begin, run and record in one transaction (state.INSTANT_TYPES)
    # Recovered work (the reaper's): to the front of its queue, not behind what was
    # queued meanwhile; a wait keeps it in the scheduled registry until it is due.
    front: bool = False


class Dispatcher:
    """Enqueues on the RQ queues of one Redis and tells a run's watchers; services and
    the engine's entry points get it as an argument (``dispatcher_for``)."""

    def __init__(self, conn: Redis, settings: EngineSettings | None = None,
                 publish: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.settings = settings or EngineSettings()
        self._publish = publish

    def job_timeout(self, item: Send) -> int:
        """RQ's timeout for the job of ``item``: a backstop a little past the task's own,
        which the job enforces itself so that it becomes a retriable failure."""
        return int((item.timeout or self.settings.task_default_timeout) + 30)

    def publish(self, run_ids: list[str]) -> None:
        """Tell the browsers watching these runs that they changed (never raises)."""
        if self._publish is not None and self.settings.live_updates:
            for run_id in run_ids:
                self._publish(run_id)

    PIPELINE = 100

    def send(self, items: list[Send]) -> None:
        # What is due now goes in few Redis round trips (a fan-out of 1,000 tasks is ten
        # pipelines, not 1,000 enqueues); waits go to RQ's scheduled registry one by one.
        due: dict[str, list[Any]] = {}
        for item in items:
            if item.child_run is not None:
                due.setdefault(item.queue, []).append(Queue.prepare_data(
                    "capability.engine.jobs.child_finished", (item.child_run,),
                    job_id=f"apg-child-{item.child_run}", result_ttl=0, failure_ttl=86400,
                    at_front=item.front))
                continue
            func = (
                "capability.engine.jobs.finish_delay" if item.finish_delay
                else "capability.engine.jobs.run_attempt"
            )
            job_id = JOB_PREFIX + item.attempt_id + ("-end" if item.finish_delay else "")
            timeout = self.job_timeout(item)
            args = (item.attempt_id, True) if item.instant else (item.attempt_id,)
            if item.delay > 0:
                Queue(item.queue, connection=self.conn).enqueue_in(
                    dt.timedelta(seconds=item.delay), func, *args, job_id=job_id,
                    job_timeout=timeout, result_ttl=0, failure_ttl=86400, at_front=item.front)
            else:
                due.setdefault(item.queue, []).append(Queue.prepare_data(
                    func, args, job_id=job_id, timeout=timeout, result_ttl=0,
                    failure_ttl=86400, at_front=item.front))
        # A pipeline per PIPELINE jobs: one for all of a 1,000-task fan-out holds ~2 MB
        # of jobs and packed commands at once, which the worker's memory then keeps.
        for name, datas in due.items():
            queue = Queue(name, connection=self.conn)
            for start in range(0, len(datas), self.PIPELINE):
                with self.conn.pipeline() as pipe:
                    queue.enqueue_many(datas[start:start + self.PIPELINE], pipeline=pipe)
                    pipe.execute()

    def stop(self, attempt_ids: list[str]) -> None:
        """Stop attempts a worker is executing (RQ's stop-job command interrupts the
        task, ``app.runtime.interrupt``); a job still waiting in a queue is cancelled
        instead."""
        for attempt_id in attempt_ids:
            job_id = JOB_PREFIX + attempt_id
            try:
                send_stop_job_command(self.conn, job_id)
                continue
            except NoSuchJobError:
                # No job of its own: a worker that went on with it after the task before
                # (jobs.run_attempt) runs it under its id, or nobody does.
                for worker in Worker.all(connection=self.conn):
                    if worker.get_current_job_id() == job_id:
                        send_command(self.conn, worker.name, "stop-job", job_id=job_id)
                continue
            except InvalidJobOperation:
                pass
            try:
                Job.fetch(job_id, connection=self.conn).cancel()
            except (InvalidJobOperation, NoSuchJobError):
                pass  # already finished: its completion will be ignored


def dispatcher_for(app: Flask, *, coalesce: bool = False) -> Dispatcher:
    """The app's dispatcher. ``coalesce``: publish live updates off the caller's thread,
    at most a few a second per run (workers, whose every hop changes a run); otherwise
    at once (a request: the person who clicked sees the change on their next look)."""
    from app.runtime.redis_conn import get_redis

    publisher = app.extensions.get(PUBLISHER)

    def publish(run_id: str) -> None:
        if publisher is not None:
            publisher(app, run_id, coalesce)

    return Dispatcher(get_redis(app), EngineSettings.from_config(app.config), publish)
