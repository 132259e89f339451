"""FAB's permission checks in fewer statements with the same answers (issue 11, item 19:
``app.security.access``): a page's menu checks its roles' permissions in one statement,
the Public role is read once per request, and a change of either applies to the next
request."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from tests.support.app import Factory
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
