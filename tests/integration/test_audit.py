"""The audit trail: automatic events, login events, the hash chain and its guards."""

from __future__ import annotations

import csv
import io
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from app.audit import chain, keys
from app.audit.context import acting_as
from app.audit.models import AuditEvent
from app.audit.recorder import build_event, record
from app.extensions import db
from app.models import Tenant
from app.security.actor import Actor
from tests.support.app import api_token, auth, unique


def events(app, **where):
    with app.app_context():
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        for key, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, key) == value)
        rows = db.session.execute(stmt).scalars().all()
        db.session.expunge_all()
        return rows


def verify(app):
    with app.app_context():
        result = chain.verify(db.session.connection(), keys.audit_key(app.config))
        db.session.rollback()
        return result


def test_team_create_update_delete_and_membership_are_audited(app, client, factory):
    admin = factory.user("Admin")
    other = factory.user("Viewer")
    headers = auth(api_token(client, admin["username"]))
    name = unique("audited")
    r = client.post("/api/v1/teams/", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.get_json()
    team_id = r.get_json()["id"]
    assert client.put(f"/api/v1/teams/{team_id}", json={"name": name + "-x"},
                      headers=headers).status_code == 200
    assert client.post(f"/api/v1/teams/{team_id}/members", json={"username": other["username"]},
                       headers=headers).status_code == 201
    assert client.delete(f"/api/v1/teams/{team_id}/members/{other['username']}",
                         headers=headers).status_code == 200
    assert client.delete(f"/api/v1/teams/{team_id}", headers=headers).status_code == 200

    team_events = events(app, target_type="team", target_id=team_id)
    assert [e.action for e in team_events] == ["create", "update", "delete"]
    assert all(e.actor == admin["username"] and e.outcome == "success" for e in team_events)
    assert team_events[0].after["name"] == name
    assert team_events[1].before == {"name": name} and team_events[1].after == {"name": name + "-x"}
    assert team_events[0].tenant == "default" and team_events[0].ip == "127.0.0.1"
    assert team_events[0].request_id
    member_events = events(app, target_type="team_membership", team=name + "-x")
    assert [e.action for e in member_events] == ["create", "delete"]
    assert verify(app).ok


def test_user_and_role_changes_are_audited_without_secrets(app, client, factory):
    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    with app.app_context():
        viewer_role = app.extensions["appbuilder"].sm.find_role("Viewer").id
    username = unique("newuser")
    r = client.post("/api/v1/security/users/", headers=headers, json={
        "username": username, "first_name": "N", "last_name": "U", "email": f"{username}@x.io",
        "active": True, "password": "Very-Secret-99!", "roles": [viewer_role],
    })
    assert r.status_code == 201, r.get_json()
    created = events(app, target_type="user", action="create", actor=admin["username"])
    mine = [e for e in created if e.after.get("username") == username]
    assert len(mine) == 1
    assert mine[0].after["password"] == "***"
    assert "Very-Secret-99!" not in str(mine[0].after)
    assert mine[0].after["roles"] == ["Viewer"]


def test_login_success_failure_and_logout_are_audited(app, client, factory):
    user = factory.user("Viewer")
    api_token(client, user["username"])
    bad = client.post("/api/v1/security/login", json={
        "username": user["username"], "password": "wrong-Pass-1!", "provider": "db"})
    assert bad.status_code == 401
    ghost = unique("ghost")
    client.post("/api/v1/security/login", json={
        "username": ghost, "password": "wrong-Pass-1!", "provider": "db"})
    logins = events(app, action="login", actor=user["username"])
    assert [e.outcome for e in logins] == ["success", "denied"]
    assert events(app, action="login", actor=ghost)[0].outcome == "denied"
    # Form login + logout in the browser session.
    client.post("/login/", data={"username": user["username"], "password": user["password"]})
    client.post("/logout/")  # logging out is a POST (a GET only asks)
    assert events(app, action="logout", actor=user["username"])


def test_denied_request_is_audited(app, client, factory):
    viewer = factory.user("Viewer")
    headers = auth(api_token(client, viewer["username"]))
    assert client.post("/api/v1/tenants/", json={"name": unique("t")},
                       headers=headers).status_code == 403
    denied = events(app, actor=viewer["username"], outcome="denied")
    assert denied and denied[-1].target_id == "/api/v1/tenants/"


def test_events_are_append_only_in_the_database(app, factory):
    factory.tenant()
    with app.app_context():
        with pytest.raises(sa.exc.DatabaseError):
            db.session.execute(sa.text("UPDATE apg_audit_event SET actor = 'mallory'"))
            db.session.commit()
        db.session.rollback()
        with pytest.raises(sa.exc.DatabaseError):
            db.session.execute(sa.text("DELETE FROM apg_audit_event"))
            db.session.commit()
        db.session.rollback()
    assert verify(app).ok


def _set_triggers(app, enabled: bool) -> None:
    with app.app_context():
        conn = db.session.connection()
        if conn.dialect.name == "postgresql":
            verb = "ENABLE" if enabled else "DISABLE"
            conn.execute(sa.text(f"ALTER TABLE apg_audit_event {verb} TRIGGER USER"))
        elif enabled:
            for v in ("UPDATE", "DELETE"):
                conn.execute(sa.text(
                    f"CREATE TRIGGER apg_audit_event_no_{v.lower()} BEFORE {v} ON apg_audit_event "
                    f"BEGIN SELECT RAISE(ABORT, 'apg_audit_event is append-only: {v} refused'); END"
                ))
        else:
            conn.execute(sa.text("DROP TRIGGER apg_audit_event_no_update"))
            conn.execute(sa.text("DROP TRIGGER apg_audit_event_no_delete"))
        db.session.commit()


def test_verify_cli_names_the_first_tampered_event(app, factory):
    factory.tenant()
    factory.tenant()
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    with app.app_context():
        victim = db.session.execute(
            select(AuditEvent.seq, AuditEvent.id, AuditEvent.actor)
            .order_by(AuditEvent.seq.desc()).limit(1).offset(1)
        ).one()
    _set_triggers(app, False)
    try:
        with app.app_context():
            db.session.execute(
                sa.text("UPDATE apg_audit_event SET actor = 'mallory' WHERE seq = :s"),
                {"s": victim.seq},
            )
            db.session.commit()
        broken = runner.invoke(args=["audit", "verify"])
        assert broken.exit_code == 1
        assert f"#{victim.seq}" in broken.output and victim.id in broken.output
    finally:
        with app.app_context():
            db.session.execute(sa.text("UPDATE apg_audit_event SET actor = :a WHERE seq = :s"),
                               {"a": victim.actor, "s": victim.seq})
            db.session.commit()
        _set_triggers(app, True)
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0


def test_verify_detects_removed_tail(app, factory):
    factory.tenant()
    with app.app_context():
        conn = db.session.connection()
        rows = [dict(r) for r in conn.execute(
            select(*[getattr(AuditEvent, n) for n in (*chain.HASHED_FIELDS, "hash")])
            .order_by(AuditEvent.seq)).mappings()]
        result = chain.verify(conn, keys.audit_key(app.config), rows[:-1])
        db.session.rollback()
    assert not result.ok and "removed" in result.reason


def test_concurrent_writers_never_fork_the_chain(app):
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for j in range(10):
                    actor = Actor(username=f"thread-{i}", roles=frozenset({"Admin"}))
                    with acting_as(actor):
                        if j % 2:
                            db.session.add(Tenant(name=unique(f"conc{i}")))
                        else:
                            record(db.session, build_event(actor, "ping", "test", str(j)))
                        db.session.commit()
                db.session.remove()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = verify(app)
    assert result.ok, result
    with app.app_context():
        seqs = db.session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars().all()
        assert seqs == list(range(1, len(seqs) + 1))
        count = db.session.execute(
            select(sa.func.count()).where(AuditEvent.actor.like("thread-%"))
        ).scalar_one()
    assert count == 80


def test_audit_api_filters_export_and_auditor_tenant_scope(app, client, factory):
    other_tenant = factory.tenant()
    home = factory.team()
    away = factory.team(tenant=other_tenant.name)
    auditor = factory.user("Auditor", teams=[home])
    admin = factory.user("Admin")
    admin_h = auth(api_token(client, admin["username"]))
    # An event in the other tenant (team rename there) and one in the auditor's tenant.
    client.put(f"/api/v1/teams/{away['id']}", json={"name": away["name"] + "-r"}, headers=admin_h)
    client.put(f"/api/v1/teams/{home['id']}", json={"name": home["name"] + "-r"}, headers=admin_h)

    aud_h = auth(api_token(client, auditor["username"]))
    r = client.get(f"/api/v1/audit/?actor={admin['username']}&action=update", headers=aud_h)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    targets = {e["target_id"] for e in body["result"]}
    assert home["id"] in targets and away["id"] not in targets
    assert body["count"] == len(body["result"])
    assert {"id", "at", "tenant", "actor", "action", "target_type", "target_id", "team", "outcome",
            "ip", "request_id", "before", "after", "prev_hash", "hash"} <= set(body["result"][0])

    r = client.get(f"/api/v1/audit/?actor={admin['username']}&action=update", headers=admin_h)
    assert {home["id"], away["id"]} <= {e["target_id"] for e in r.get_json()["result"]}

    r = client.get(f"/api/v1/audit/export.csv?actor={admin['username']}", headers=aud_h)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert rows and all(row["actor"] == admin["username"] for row in rows)
    assert away["id"] not in {row["target_id"] for row in rows}

    bad = client.get("/api/v1/audit/?since=yesterday", headers=aud_h)
    assert bad.status_code == 422
    assert bad.get_json()["errors"][0]["path"] == "since"
    r = client.get("/api/v1/audit/?since=2000-01-01T00:00:00Z&until=2001-01-01", headers=admin_h)
    assert r.get_json()["count"] == 0


def test_role_changes_through_the_security_api_are_audited(app, client, factory):
    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    name = unique("Role")
    r = client.post("/api/v1/security/roles/", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.get_json()
    role_id = r.get_json()["id"]
    r = client.put(f"/api/v1/security/roles/{role_id}", json={"name": name + "x"},
                   headers=headers)
    assert r.status_code == 200, r.get_json()
    r = client.delete(f"/api/v1/security/roles/{role_id}", headers=headers)
    assert r.status_code == 200, r.get_json()
    got = events(app, target_type="role", target_id=str(role_id))
    assert [e.action for e in got] == ["create", "update", "delete"]
    assert got[1].before == {"name": name} and got[1].after == {"name": name + "x"}
    assert all(e.actor == admin["username"] for e in got)
