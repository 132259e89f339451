"""FAB's permission checks in fewer statements with the same answers (issue 11, item 19:
``app.security.access``): a page's menu checks its roles' permissions in one statement,
a process keeps them under the permission epoch, and a change made any way (FAB's
calls, a DML statement, another process) applies to the next request."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from flask_appbuilder.security.sqla.models import assoc_permissionview_role
from sqlalchemy import delete, insert, select, text

from app.extensions import db
from app.models import PermissionEpoch
from tests.support.app import Factory, api_token, auth
from tests.support.driver import statements
from tests.support.pages import login


def _permission_statements(app: Flask, client: FlaskClient, url: str,
                           headers: dict[str, str] | None = None) -> int:
    client.get(url, headers=headers or {})  # warm
    with statements(app) as seen:
        r = client.get(url, headers=headers or {})
    assert r.status_code == 200, r.status_code
    return sum("ab_permission_view" in s for s in seen)


def test_a_page_reads_its_permissions_once(app: Flask, factory: Factory,
                                          author: dict[str, Any]) -> None:
    """The runs list draws a menu of about twenty entries, each a permission check: one
    statement for the Public role and one for the user's roles, not one per entry."""
    viewer = login(app, factory.user("Viewer", teams=[author["team"]]))
    assert _permission_statements(app, viewer, "/runs/list/") <= 2


def test_a_process_keeps_permissions_until_the_epoch_moves(
        app: Flask, factory: Factory, author: dict[str, Any]) -> None:
    """Once read, the next request answers every check from what this process keeps
    (no permission statement), until a change replaces the epoch."""
    viewer = login(app, factory.user("Viewer", teams=[author["team"]]))
    _permission_statements(app, viewer, "/runs/list/")
    assert _permission_statements(app, viewer, "/runs/list/") == 0
    with app.app_context():
        sm = app.extensions["appbuilder"].sm
        before = db.session.execute(select(PermissionEpoch.value)).scalar_one()
        sm.add_role("Epoch mover")
        after = db.session.execute(select(PermissionEpoch.value)).scalar_one()
        db.session.remove()
    assert after != before
    with statements(app) as seen:
        assert viewer.get("/runs/list/").status_code == 200
    assert any("ab_permission_view" in s for s in seen)  # read again, once


def _probe(app: Flask, factory: Factory) -> tuple[dict[str, str], int, int]:
    """A user whose only role has no permission, the role and Runs' can_read."""
    sm = app.extensions["appbuilder"].sm
    with app.app_context():
        role = sm.add_role(f"Probe {factory.user('Viewer')['id']}")
        role_id = role.id
        pv_id = sm.find_permission_view_menu("can_read", "Runs").id
        db.session.remove()
    user = factory.user("Viewer")
    with app.app_context():
        found = sm.get_user_by_id(user["id"])
        found.roles = [sm.find_role(role.name)]
        db.session.commit()
        db.session.remove()
    return {"username": user["username"]}, role_id, pv_id


def test_a_grant_and_a_revocation_apply_at_the_next_request(
        app: Flask, client: FlaskClient, factory: Factory) -> None:
    """Through FAB's own calls (the forms and the API use them)."""
    who, role_id, _ = _probe(app, factory)
    h = auth(api_token(client, who["username"]))
    assert client.get("/api/v1/runs/", headers=h).status_code == 403
    assert client.get("/api/v1/runs/", headers=h).status_code == 403  # kept: still 403
    sm = app.extensions["appbuilder"].sm
    with app.app_context():
        sm.add_permission_role(db.session.get(sm.role_model, role_id),
                               sm.find_permission_view_menu("can_read", "Runs"))
        db.session.remove()
    assert client.get("/api/v1/runs/", headers=h).status_code == 200
    with app.app_context():
        sm.del_permission_role(db.session.get(sm.role_model, role_id),
                               sm.find_permission_view_menu("can_read", "Runs"))
        db.session.remove()
    assert client.get("/api/v1/runs/", headers=h).status_code == 403


def test_a_dml_statement_on_the_links_moves_the_epoch(
        app: Flask, client: FlaskClient, factory: Factory) -> None:
    """The composition engine removes links with a DELETE statement, not the ORM."""
    who, role_id, pv_id = _probe(app, factory)
    h = auth(api_token(client, who["username"]))
    link = {"role_id": role_id, "permission_view_id": pv_id}
    with app.app_context():
        db.session.execute(insert(assoc_permissionview_role).values(**link))
        db.session.commit()
        db.session.remove()
    assert client.get("/api/v1/runs/", headers=h).status_code == 200
    assert client.get("/api/v1/runs/", headers=h).status_code == 200
    with app.app_context():
        db.session.execute(delete(assoc_permissionview_role).where(
            assoc_permissionview_role.c.role_id == role_id))
        db.session.commit()
        db.session.remove()
    assert client.get("/api/v1/runs/", headers=h).status_code == 403


def test_another_process_change_applies_here(
        app: Flask, client: FlaskClient, factory: Factory) -> None:
    """Another process's change is a row of links and a new epoch in the shared
    database: written here on a raw connection (no hook of this process sees it)."""
    who, role_id, pv_id = _probe(app, factory)
    h = auth(api_token(client, who["username"]))
    assert client.get("/api/v1/runs/", headers=h).status_code == 403
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(insert(assoc_permissionview_role).values(
            role_id=role_id, permission_view_id=pv_id))
    assert client.get("/api/v1/runs/", headers=h).status_code == 403  # epoch unchanged
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE apg_permission_epoch SET value = value + 7"))
    assert client.get("/api/v1/runs/", headers=h).status_code == 200


def test_a_user_and_roles_are_one_statement(app: Flask, client: FlaskClient,
                                           author: dict[str, Any]) -> None:
    """An API call loads the token's user with its roles and groups at once."""
    client.get("/api/v1/runs/", headers=author["h"])
    with statements(app) as seen:
        assert client.get("/api/v1/runs/", headers=author["h"]).status_code == 200
    assert not any("FROM ab_role, ab_user_role" in s for s in seen)
    assert not any("FROM ab_group, ab_user_group" in s for s in seen)


def test_public_permissions_apply_at_the_next_request(app: Flask,
                                                      client: FlaskClient) -> None:
    """What the Public role may do is read per request: granted, an anonymous call
    passes; revoked, it is refused again."""
    sm = app.extensions["appbuilder"].sm
    assert client.get("/api/v1/runs/").status_code == 401
    with app.app_context():
        public = sm.find_role(sm.auth_role_public)
        pv = sm.find_permission_view_menu("can_read", "Runs")
        sm.add_permission_role(public, pv)
        db.session.remove()
    try:
        assert client.get("/api/v1/runs/").status_code == 200
    finally:
        with app.app_context():
            sm.del_permission_role(sm.find_role(sm.auth_role_public),
                                   sm.find_permission_view_menu("can_read", "Runs"))
            db.session.remove()
    assert client.get("/api/v1/runs/").status_code == 401
