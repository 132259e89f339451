"""Real worker processes for a test (``flask --app app worker``, and the scheduler when a
retry's backoff must be served), on the test app's database, Redis and settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask


def worker_env(app: Flask) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"], "APG_SYNC_SECURITY": "0",
            "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"],
            "SECRET_KEY": app.config["SECRET_KEY"],
            "PYTHON_TASK_PREFIXES": "tests.support.callables",
            "CONNECTION_FILES_DIR": app.config["CONNECTION_FILES_DIR"],
            "EGRESS_ALLOW": app.config["EGRESS_ALLOW"]}

@contextmanager
def processes(app: Flask, *commands: str) -> Iterator[None]:
    """``commands`` (default: one worker) running for the block, then stopped."""
    procs = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", command],
                              env=worker_env(app), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for command in commands or ("worker",)]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
