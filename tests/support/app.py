"""Helpers of every test: the app's configuration, unique names, users and teams,
API tokens, and serving an app on a real port. Fixtures live in ``conftest.py`` files;
test modules import helpers from ``tests.support`` only."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

PASSWORD = "Test-Pass-123!"
# The tests' HTTP peers (pytest-httpserver) listen on loopback, which the egress policy
# denies by default. Allowed without a port: the app's own Redis and PostgreSQL stay
# denied (an allow entry opens them only by naming their port).
LOOPBACK_PEERS = "127.0.0.1 ::1"


def reset_postgres(url: str) -> None:
    name = sa.engine.make_url(url).database or ""
    if "test" not in name and "ci" not in name:
        raise RuntimeError(f"refusing to wipe database {name!r}: its name must contain 'test'")
    from config import database_url

    engine = sa.create_engine(database_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def make_config(urls: dict[str, str], **extra: Any) -> dict[str, Any]:
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "SQLALCHEMY_DATABASE_URI": urls["database"],
        "REDIS_URL": urls["redis"],
        "INSTANCE_DIR": urls["instance"],
        "WTF_CSRF_ENABLED": False,
        "AUTH_RATE_LIMIT": "10000 per minute",
        # Every test client is 127.0.0.1: the suite's failed logins must not add up to
        # an address lockout (tests of the login limits set their own).
        "LOGIN_MAX_FAILURES_PER_ADDRESS": 1_000_000,
        "APG_DISCOVER_ENTRY_POINTS": False,
        "PYTHON_TASK_PREFIXES": ["tests.support.callables"],
        "EGRESS_ALLOW": LOOPBACK_PEERS,
    }
    config.update(extra)
    return config


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Factory:
    """Creates users, tenants and teams with unique names (tests never clean up:
    the audit trail is append-only, so every test leaves its own rows)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def tenant(self, name: str | None = None) -> Any:
        from app.extensions import db
        from app.models import Tenant

        with self.app.app_context():
            tenant = Tenant(name=name or unique("tenant"))
            db.session.add(tenant)
            db.session.commit()
            db.session.refresh(tenant)
            db.session.expunge(tenant)
            return tenant

    def team(self, name: str | None = None, tenant: str | None = None) -> Any:
        from sqlalchemy import select

        from app.extensions import db
        from app.models import Team, Tenant

        with self.app.app_context():
            tenant_name = tenant or self.app.config["DEFAULT_TENANT"]
            tenant_row = db.session.execute(
                select(Tenant).where(Tenant.name == tenant_name)
            ).scalar_one()
            team = Team(name=name or unique("team"), tenant=tenant_row)
            db.session.add(team)
            db.session.commit()
            result = {"id": team.id, "name": team.name, "tenant": tenant_name}
            db.session.remove()
            return result

    def user(self, role: str, teams: list[dict[str, Any]] | None = None,
             username: str | None = None) -> dict[str, Any]:
        from app.extensions import db
        from app.models import TeamMembership

        with self.app.app_context():
            sm = self.app.extensions["appbuilder"].sm
            name = username or unique(role.lower())
            user = sm.add_user(
                username=name, first_name=role, last_name="Tester",
                email=f"{name}@example.com", role=sm.find_role(role), password=PASSWORD,
            )
            assert user, f"could not create {name}"
            for team in teams or []:
                db.session.add(TeamMembership(team_id=team["id"], user_id=user.id))
            db.session.commit()
            result = {"id": user.id, "username": name, "password": PASSWORD, "role": role}
            db.session.remove()
            return result


def api_token(client: FlaskClient, username: str, password: str = PASSWORD) -> str:
    response = client.post(
        "/api/v1/security/login",
        json={"username": username, "password": password, "provider": "db", "refresh": True},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["access_token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def serving(app: Flask, name: str = "test-server",
            request_handler: Any = None) -> Iterator[str]:
    """``app`` on a real port (Werkzeug, threaded) while the block runs: its base URL.
    ``request_handler``: Werkzeug's request handler class to serve with (default its own)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=request_handler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def quiet_socketio_listener() -> None:
    """The message-queue listener thread cannot be stopped and retries (logging an error)
    once the test Redis is gone at exit, when pytest has closed its streams."""
    logging.getLogger("socketio.server").setLevel(logging.CRITICAL)
