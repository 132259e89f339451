"""Shared fixtures: one application on a real database and a real Redis.

``DATABASE_URL`` / ``REDIS_URL`` choose the services (CI: the machine's PostgreSQL and
Redis); without them the suite runs on a SQLite file and an embedded Redis server.
The schema is built by running the migrations, never by ``create_all``. Helpers are in
``tests.support``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import Factory, make_config, quiet_socketio_listener, reset_postgres
from tests.support.engine import child_env, spawned


@pytest.fixture(scope="session", autouse=True)
def _quiet_listener_at_exit() -> Iterator[None]:
    """Every app built since a module quieted it set its level again (app.logs): the
    listener thread outlives the suite and would report the embedded Redis going away."""
    yield
    quiet_socketio_listener()


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from app.runtime.redis_conn import start_embedded

    base = tmp_path_factory.mktemp("apg")
    db_url = os.environ.get("DATABASE_URL") or f"sqlite:///{base / 'test.db'}"
    if db_url.startswith("postgresql"):
        reset_postgres(db_url)
    redis_url = os.environ.get("REDIS_URL") or start_embedded(base / "redis")
    return {"database": db_url, "redis": redis_url, "instance": str(base / "instance")}


@pytest.fixture(scope="session")
def app(service_urls: dict[str, str]) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from app import create_app, sync_security
    from app.extensions import db

    first = create_app(make_config(service_urls))
    with first.app_context():
        upgrade()
        sync_security(first)
        db.session.remove()
    # A second start on the migrated schema registers permissions as `make run` does.
    application = create_app(make_config(service_urls))
    yield application


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def factory(app: Flask) -> Factory:
    return Factory(app)


@pytest.fixture()
def processes(app: Flask, tmp_path: Any) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts `flask --app app <command>` processes; stops whatever is left at the end."""
    with spawned(tmp_path, [sys.executable, "-m", "flask", "--app", "app"],
                 child_env(app, APG_SYNC_SECURITY="0")) as spawn:
        yield spawn
