"""Bad input: a clear 4xx JSON error, nothing changed, an audit event for the person."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import Team, Tenant
from tests.support.app import api_token, auth, unique


def counts(app):
    with app.app_context():
        result = (
            db.session.execute(select(func.count()).select_from(Team)).scalar_one(),
            db.session.execute(select(func.count()).select_from(Tenant)).scalar_one(),
        )
        db.session.remove()
        return result


def last_event(app, actor):
    with app.app_context():
        event = db.session.execute(
            select(AuditEvent).where(AuditEvent.actor == actor).order_by(AuditEvent.seq.desc())
        ).scalars().first()
        db.session.expunge_all()
        return event


@pytest.fixture()
def admin(client, factory):
    user = factory.user("Admin")
    return user, auth(api_token(client, user["username"]))


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({}, 422, "name"),
        ({"name": ""}, 422, "name"),
        ({"name": "   "}, 422, "name"),
        ({"name": "bad/name"}, 422, "name"),
        ({"name": "x" * 65}, 422, "name"),
        ({"name": 12}, 422, "name"),
        ({"name": "ok", "colour": "red"}, 422, "colour"),
        ({"name": "ok", "tenant": "no-such-tenant"}, 422, "tenant"),
    ],
)
def test_invalid_team_payloads(app, client, admin, body, status, path):
    user, headers = admin
    before = counts(app)
    r = client.post("/api/v1/teams/", json=body, headers=headers)
    assert r.status_code == status, r.get_json()
    payload = r.get_json()
    assert payload["message"]
    assert path in {e["path"] for e in payload["errors"]}
    assert counts(app) == before
    event = last_event(app, user["username"])
    assert event.outcome == "error" and event.target_type == "team" and event.action == "create"


def test_malformed_and_missing_json(app, client, admin):
    user, headers = admin
    before = counts(app)
    r = client.post("/api/v1/teams/", data="{not json", headers={
        **headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.get_json()["message"]
    r = client.post("/api/v1/teams/", headers=headers)
    assert r.status_code == 400 and "missing" in r.get_json()["message"]
    r = client.post("/api/v1/teams/", json=["a", "list"], headers=headers)
    assert r.status_code == 422
    assert counts(app) == before
    assert last_event(app, user["username"]).outcome == "error"


def test_duplicate_names_conflict(app, client, admin, factory):
    user, headers = admin
    team = factory.team()
    tenant = factory.tenant()
    before = counts(app)
    r = client.post("/api/v1/teams/", json={"name": team["name"].upper()}, headers=headers)
    assert r.status_code == 409
    assert r.get_json()["errors"][0]["path"] == "name"
    r = client.post("/api/v1/tenants/", json={"name": tenant.name}, headers=headers)
    assert r.status_code == 409
    assert counts(app) == before
    other = factory.team()
    r = client.put(f"/api/v1/teams/{other['id']}", json={"name": team["name"]}, headers=headers)
    assert r.status_code == 409
    event = last_event(app, user["username"])
    assert event.outcome == "error" and event.target_id == other["id"]


def test_oversize_body_is_refused(app, client, admin):
    user, headers = admin
    before = counts(app)
    big = {"name": "x", "pad": "y" * (app.config["MAX_CONTENT_LENGTH"] + 10)}
    r = client.post("/api/v1/teams/", json=big, headers=headers)
    assert r.status_code == 413
    assert r.is_json and r.get_json()["message"]
    assert counts(app) == before
    assert last_event(app, user["username"]).outcome == "error"


def test_unknown_member_and_duplicate_member(app, client, admin, factory):
    _, headers = admin
    team = factory.team()
    member = factory.user("Viewer")
    r = client.post(f"/api/v1/teams/{team['id']}/members", json={"username": unique("nobody")},
                    headers=headers)
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "username"
    ok = client.post(f"/api/v1/teams/{team['id']}/members",
                     json={"username": member["username"]}, headers=headers)
    assert ok.status_code == 201
    again = client.post(f"/api/v1/teams/{team['id']}/members",
                        json={"username": member["username"]}, headers=headers)
    assert again.status_code == 409


def test_wrong_credentials(client, factory):
    user = factory.user("Viewer")
    r = client.post("/api/v1/security/login", json={
        "username": user["username"], "password": "nope", "provider": "db"})
    assert r.status_code == 401
    r = client.post("/api/v1/security/login", data="garbage",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_rejected_ui_form_changes_nothing_and_is_audited(app, factory):
    admin = factory.user("Admin")
    team = factory.team()
    client = app.test_client()
    client.post("/login/", data={"username": admin["username"], "password": admin["password"]})
    before = counts(app)
    with app.app_context():
        tenant_id = db.session.execute(
            select(Tenant.id).where(Tenant.name == "default")).scalar_one()
    r = client.post("/teamview/add", data={"name": team["name"], "tenant": tenant_id},
                    follow_redirects=True)
    assert "already has a team named" in r.get_data(as_text=True)
    assert counts(app) == before
    event = last_event(app, admin["username"])
    assert (event.action, event.target_type, event.outcome) == ("create", "team", "error")
    assert "already has a team named" in event.after["message"]


def test_deleting_a_team_removes_its_memberships(app, client, factory):
    from app.models import TeamMembership

    admin = factory.user("Admin")
    team = factory.team()
    factory.user("Viewer", teams=[team])
    headers = auth(api_token(client, admin["username"]))
    assert client.delete(f"/api/v1/teams/{team['id']}", headers=headers).status_code == 200
    with app.app_context():
        left = db.session.execute(
            select(TeamMembership).where(TeamMembership.team_id == team["id"])).first()
    assert left is None


def _ui_admin(app, factory):
    admin = factory.user("Admin")
    client = app.test_client()
    client.post("/login/", data={"username": admin["username"], "password": admin["password"]})
    return admin, client


def test_ui_delete_of_referenced_tenant_is_refused_and_audited(app, factory):
    admin, client = _ui_admin(app, factory)
    tenant = factory.tenant()
    factory.team(tenant=tenant.name)
    r = client.post(f"/tenantview/delete/{tenant.id}", follow_redirects=True)
    assert (f"Tenant {tenant.name!r} still owns 1 team: delete or move it first"
            in html.unescape(r.get_data(as_text=True)))
    with app.app_context():
        assert db.session.get(Tenant, tenant.id) is not None
    event = last_event(app, admin["username"])
    assert (event.action, event.target_type, event.outcome) == ("delete", "tenant", "error")


def test_ui_form_validation_failures_are_audited(app, factory):
    admin, client = _ui_admin(app, factory)
    tenant = factory.tenant()
    r = client.post("/tenantview/add", data={"name": tenant.name})
    assert r.status_code == 200  # the form comes back with FAB's "Already exists."
    event = last_event(app, admin["username"])
    assert (event.action, event.target_type, event.outcome) == ("create", "tenant", "error")
    assert event.after["errors"][0]["path"] == "name"


def test_ui_oversize_form_gets_the_413_page(app, factory):
    _, client = _ui_admin(app, factory)
    r = client.post("/teamview/add", data={"name": "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)})
    assert r.status_code == 413
    assert 'id="error-413"' in r.get_data(as_text=True)


def test_csrf_refusal_names_the_signed_in_user(app, service_urls, factory):
    from app import create_app
    from tests.support.app import make_config

    csrf_app = create_app(make_config(service_urls, WTF_CSRF_ENABLED=True))
    admin = factory.user("Admin")
    client = csrf_app.test_client()
    page = client.get("/login/").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    client.post("/login/", data={"username": admin["username"], "password": admin["password"],
                                 "csrf_token": token})
    r = client.post("/teamview/add", data={"name": unique("nocsrf")})
    assert r.status_code == 400
    event = last_event(app, admin["username"])
    assert event.outcome == "error" and event.target_id == "/teamview/add"
