"""RQ worker and scheduler processes that run inside the Flask app context."""

from __future__ import annotations

from typing import Any

from flask import Flask
from rq import Queue, Worker
from rq.scheduler import RQScheduler

from app.runtime.redis_conn import get_redis


class AppWorker(Worker):
    """An RQ worker whose jobs run inside the application context (as Flask's Celery
    example does), so jobs call the same services as the web process."""

    flask_app: Flask | None = None

    def perform_job(self, job: Any, queue: Any) -> bool:
        assert self.flask_app is not None
        with self.flask_app.app_context():
            return super().perform_job(job, queue)


def queues(app: Flask, names: list[str] | None = None) -> list[Queue]:
    conn = get_redis(app)
    return [Queue(name, connection=conn) for name in (names or app.config["RQ_QUEUES"])]


def run_worker(app: Flask, queue_names: list[str] | None = None, burst: bool = False) -> bool:
    worker = AppWorker(queues(app, queue_names), connection=get_redis(app))
    worker.flask_app = app
    # RQ installs its own SIGTERM handler: the current job finishes, then it exits.
    return worker.work(burst=burst, with_scheduler=False)


def run_scheduler(app: Flask, queue_names: list[str] | None = None, interval: int = 1) -> None:
    """Move due delayed and retried jobs onto their queues. Each queue's scheduler lock
    lives in Redis, so running several schedulers never enqueues a job twice."""
    scheduler = RQScheduler(
        queue_names or app.config["RQ_QUEUES"], connection=get_redis(app), interval=interval
    )
    scheduler.acquire_locks()
    scheduler.work()
