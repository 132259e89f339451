"""RQ worker and scheduler processes that run inside the Flask app context.

Signals (RQ's own handling, kept as is):

* worker, first SIGTERM or SIGINT: warm shutdown. An idle worker exits at once; a busy
  one finishes its current job, then exits. A second signal, a second or more later,
  is a cold shutdown: the job's work horse is killed and the worker exits.
* scheduler, SIGTERM or SIGINT: it releases its locks and exits within a second.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from flask import Flask
from rq import Queue, Worker
from rq.scheduler import RQScheduler

from app.extensions import db
from app.runtime.redis_conn import get_redis

log = logging.getLogger(__name__)

# Worker registrations: an idle worker renews its key every WORKER_TTL - 15 s and the
# key lives WORKER_TTL + 60 s, so a worker killed with SIGKILL (or a machine that
# vanished) drops out of Worker.all() within about 90 s, instead of RQ's 8 minutes.
WORKER_TTL = 30

# A scheduler without every queue's lock (another one holds it) tries again this often,
# so a standby takes over within about a minute of the holder dying (the lock's TTL).
LOCK_RETRY_SECONDS = 15


class AppWorker(Worker):
    """An RQ worker whose jobs run inside the application context (as Flask's Celery
    example does), so jobs call the same services as the web process.

    Each job runs in a forked work horse. The horse drops the database connections
    it inherited from the worker without closing them (they still belong to the
    worker: SQLAlchemy's rule for forked processes), and closes the ones it opened
    itself before it exits."""

    flask_app: Flask | None = None

    def perform_job(self, job: Any, queue: Any) -> bool:
        assert self.flask_app is not None
        with self.flask_app.app_context():
            in_horse = bool(getattr(self, "_is_horse", False))
            if in_horse:
                db.engine.dispose(close=False)
            try:
                return super().perform_job(job, queue)
            finally:
                if in_horse:
                    db.session.remove()
                    db.engine.dispose()

    def unsubscribe(self) -> None:
        # RQ sends UNSUBSCRIBE, then stops its pub/sub thread and joins it for up to 1s.
        # When the reply wakes the thread before the stop, the thread goes back to
        # waiting (60s) and every shutdown takes that second. Stopping first lets the
        # reply end the thread at once.
        if self.pubsub_thread:
            self.pubsub_thread.stop()
        super().unsubscribe()


class AppScheduler(RQScheduler):
    """RQ's scheduler, retrying the queue locks it does not hold every
    ``LOCK_RETRY_SECONDS`` instead of RQ's 10 minutes: several schedulers may run
    (one per machine); one of them moves due jobs, the others stand by."""

    @property
    def should_reacquire_locks(self) -> bool:
        if self._queue_names == self.acquired_locks:
            return False
        if not self.lock_acquisition_time:
            return True
        waited = (datetime.now() - self.lock_acquisition_time).total_seconds()
        return waited > LOCK_RETRY_SECONDS


def queues(app: Flask, names: list[str] | None = None) -> list[Queue]:
    conn = get_redis(app)
    return [Queue(name, connection=conn) for name in (names or app.config["RQ_QUEUES"])]


def run_worker(app: Flask, queue_names: list[str] | None = None, burst: bool = False) -> bool:
    # The worker itself needs no database connection while it waits for jobs.
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    worker = AppWorker(queues(app, queue_names), connection=get_redis(app), worker_ttl=WORKER_TTL)
    worker.flask_app = app
    return worker.work(burst=burst, with_scheduler=False)


def run_scheduler(app: Flask, queue_names: list[str] | None = None, interval: int = 1) -> None:
    """Move due delayed and retried jobs onto their queues. Each queue's scheduler lock
    lives in Redis, so running several schedulers never enqueues a job twice."""
    names = queue_names or app.config["RQ_QUEUES"]
    scheduler = AppScheduler(names, connection=get_redis(app), interval=interval)
    held = scheduler.acquire_locks()
    log.info(
        "scheduler pid %s for queues %s (holding the lock of: %s)",
        os.getpid(), ", ".join(names), ", ".join(sorted(held)) or "none, standing by",
    )
    scheduler.work()
    log.info("scheduler pid %s stopped", os.getpid())
