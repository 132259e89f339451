"""Drive runs to the end in the test process: a real RQ worker (SimpleWorker, burst
mode, inside the app context) plus RQ's scheduler moving due retries and delays; and
start real worker processes on the test app's services (``child_env``, ``spawned``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from rq import SimpleWorker
from rq.scheduler import RQScheduler

from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.runtime.worker import PromptUnsubscribe, queues
from capability.dsl import FINISHED_RUN_STATUSES
from capability.models import Run


class AppSimpleWorker(PromptUnsubscribe, SimpleWorker):
    flask_app: Flask | None = None

    def perform_job(self, job: Any, queue: Any) -> bool:
        assert self.flask_app is not None
        with self.flask_app.app_context():
            try:
                return super().perform_job(job, queue)
            finally:
                db.session.remove()


def run_status(app: Flask, run_id: str) -> str:
    with app.app_context():
        status = db.session.get(Run, run_id).status
        db.session.remove()
        return str(status)


def work_once(app: Flask) -> None:
    """Run every job that is queued now, then return (burst mode)."""
    worker = AppSimpleWorker(queues(app), connection=get_redis(app))
    worker.flask_app = app
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")


def drain(app: Flask, run_id: str, timeout: float = 30.0) -> str:
    """Work the queues until the run is finished; returns its final status."""
    conn = get_redis(app)
    names = app.config["RQ_QUEUES"]
    scheduler = RQScheduler(names, connection=conn)
    scheduler.prepare_registries(names)
    deadline = time.monotonic() + timeout
    finished = {s.value for s in FINISHED_RUN_STATUSES}
    while time.monotonic() < deadline:
        work_once(app)
        status = run_status(app, run_id)
        if status in finished:
            return status
        scheduler.enqueue_scheduled_jobs()
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {run_status(app, run_id)} after {timeout}s")


@contextmanager
def spawned(tmp_path: Path, argv: list[str], env: dict[str, str],
            cwd: str | None = None) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """``spawn("worker --burst")`` starts ``argv + command`` with its output in a log
    under ``tmp_path``; whatever is still running at the end gets SIGTERM (then SIGKILL
    after 30 s)."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(command: str) -> subprocess.Popen[bytes]:
        args = command.split()
        log = (tmp_path / f"{args[0]}-{len(started)}.log").open("wb")
        proc = subprocess.Popen([*argv, *args], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def child_env(app: Flask, **extra: str) -> dict[str, str]:
    """The environment of a worker, scheduler or CLI process on the test app's services."""
    return {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"], "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"],
            "SECRET_KEY": app.config["SECRET_KEY"],
            "PYTHON_TASK_PREFIXES": "tests.support.callables",
            "CONNECTION_FILES_DIR": str(app.config.get("CONNECTION_FILES_DIR") or ""),
            "EGRESS_ALLOW": str(app.config.get("EGRESS_ALLOW") or ""), **extra}
