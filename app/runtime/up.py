"""``flask --app app up``: everything on one machine.

Migrates, ensures the admin, then runs N RQ workers and one scheduler as child
processes and the web server (Flask-SocketIO) in this process. Children get this
process's ``REDIS_URL`` (the embedded server's socket when none was configured), so
every process talks to the same Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import click
from flask import Flask

from app.extensions import db, socketio


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", *args], env=env
    )


def prepare(app: Flask) -> None:
    """Migrate, sync permissions and roles, ensure the admin (printing a generated password)."""
    from flask_migrate import upgrade

    from app import sync_security
    from app.security.admin import ensure_admin

    upgrade()
    sync_security(app)
    result = ensure_admin(app)
    if result.generated_password:
        click.echo(
            "\n  Created the Admin user\n"
            f"    username: {result.username}\n"
            f"    password: {result.generated_password}\n"
            "  It is shown this once; change it under your user's profile.\n"
        )
    elif result.created:
        click.echo(f"Created the Admin user {result.username!r} from ADMIN_PASSWORD.")
    db.session.remove()


def run_up(app: Flask, host: str, port: int, workers: int) -> None:
    prepare(app)
    env = dict(os.environ)
    env["REDIS_URL"] = app.config["REDIS_URL"]
    env["DATABASE_URL"] = app.config["SQLALCHEMY_DATABASE_URI"]
    # Children must not race each other creating permissions; this process did it.
    env["APG_SYNC_SECURITY"] = "0"
    children = [_spawn(["worker"], env) for _ in range(workers)]
    children.append(_spawn(["scheduler"], env))

    def stop(*_: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    click.echo(
        f"APG Workflow Orchestration is up: http://{host}:{port}/  "
        f"(log in at http://{host}:{port}/login/ ; {workers} worker(s), 1 scheduler; "
        f"database {app.config['SQLALCHEMY_DATABASE_URI'].split('@')[-1]})"
    )
    try:
        socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True, use_reloader=False)
    finally:
        stop()
