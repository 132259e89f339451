"""/health and the five roles re-synced at every start."""

from __future__ import annotations

import socket

from flask_appbuilder.security.sqla.models import PermissionView, Role
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.security.roles import ROLE_NAMES
from tests.support.app import api_token, auth, make_config


def test_health_reports_ok_with_worker_count(app, client, factory, monkeypatch):
    # Within the start-up grace: no worker runs in this test (tests/integration/
    # test_health_exposure.py checks the worker verdict and what anonymous callers see).
    monkeypatch.setitem(app.config, "HEALTH_WORKER_GRACE", 3600)
    headers = auth(api_token(client, factory.user("Viewer")["username"]))
    body = client.get("/health", headers=headers).get_json()
    assert body == {"status": "ok", "checks": {"database": "ok", "redis": "ok",
                                               "workers": body["checks"]["workers"]}}
    assert isinstance(body["checks"]["workers"], int)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_is_503_naming_the_failing_check(app, client, factory, service_urls):
    headers = auth(api_token(client, factory.user("Viewer")["username"]))
    broken = create_app(make_config(
        service_urls, REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"))
    r = broken.test_client().get("/health", headers=headers)
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "error"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error")
    assert body["failing"] == ["redis"]


def _perms(app, role: str) -> set[tuple[str, str]]:
    with app.app_context():
        found = db.session.execute(select(Role).where(Role.name == role)).scalar_one()
        result = {(pv.permission.name, pv.view_menu.name) for pv in found.permissions}
        db.session.remove()
        return result


def test_roles_exist_with_the_permissions_of_the_contract(app):
    with app.app_context():
        names = set(db.session.execute(select(Role.name)).scalars())
    assert set(ROLE_NAMES) <= names
    viewer = _perms(app, "Viewer")
    assert ("can_read", "Teams") in viewer
    assert not any(view in {"Tenants", "AuditTrail", "Capabilities"} for _, view in viewer)
    auditor = _perms(app, "Auditor")
    assert {("can_read", "AuditTrail"), ("can_export", "AuditTrail")} <= auditor
    assert not any(view in {"Teams", "Tenants"} for _, view in auditor)
    with app.app_context():
        every = set(db.session.execute(select(PermissionView.id)).scalars())
        admin = db.session.execute(select(Role).where(Role.name == "Admin")).scalar_one()
        assert {pv.id for pv in admin.permissions} == every


def test_roles_are_resynced_at_start(app, service_urls):
    with app.app_context():
        viewer = db.session.execute(select(Role).where(Role.name == "Viewer")).scalar_one()
        extra = db.session.execute(select(PermissionView).join(PermissionView.view_menu).where(
            PermissionView.view_menu.has(name="Tenants"))).scalars().first()
        from app.audit.context import acting_as
        from app.security.actor import Actor

        with acting_as(Actor(username="tamperer", roles=frozenset({"Admin"}))):
            viewer.permissions = [extra]  # drop all it should have, add one it should not
            db.session.commit()
        db.session.remove()
    assert any(view == "Tenants" for _, view in _perms(app, "Viewer"))
    create_app(make_config(service_urls))
    restored = _perms(app, "Viewer")
    assert ("can_read", "Teams") in restored
    assert not any(view == "Tenants" for _, view in restored)
    from app.audit.models import AuditEvent

    with app.app_context():
        event = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "sync", AuditEvent.target_id == "Viewer")
            .order_by(AuditEvent.seq.desc())
        ).scalars().first()
        assert event.actor == "system"
        assert "can_read on Teams" in event.after["granted"]
        assert any("Tenants" in p for p in event.before["revoked"])


def test_first_start_records_one_event_per_role_not_per_permission(app):
    from app.audit.models import AuditEvent

    with app.app_context():
        first = db.session.execute(
            select(AuditEvent.action, AuditEvent.target_id)
            .where(AuditEvent.actor == "system", AuditEvent.target_type == "role",
                   AuditEvent.target_id.in_(ROLE_NAMES))  # not other tests' role edits
        ).all()
        permissions = db.session.execute(select(func.count()).select_from(PermissionView)).scalar()
    # Each start adds at most one event per role; ~90 permissions never become 90 events.
    assert all(row.action == "sync" for row in first), first
    assert {row.target_id for row in first} <= set(ROLE_NAMES)
    assert len(first) < permissions / 2


def test_workers_api_lists_queues_and_a_live_worker(app, client, factory):
    """A real RQ worker process registers itself; the API and /health count it."""
    import os
    import subprocess
    import sys
    import time

    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "APG_SYNC_SECURITY": "0",
           "APG_INSTANCE_DIR": app.config["INSTANCE_DIR"],
           "SECRET_KEY": app.config["SECRET_KEY"]}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker",
                             "--queues", "default"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = client.get("/api/v1/workers/", headers=headers).get_json()
            if body["workers"]:
                break
            time.sleep(0.2)
        assert [q["name"] for q in body["queues"]] == ["high", "default", "low"]
        assert body["workers"] and body["workers"][0]["queues"] == ["default"]
        assert client.get("/health", headers=headers).get_json()["checks"]["workers"] >= 1
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
