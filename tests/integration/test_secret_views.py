"""Security -> Secrets in the browser (server-rendered): an Admin, or an Author of the
team, adds, sets a new value and deletes through the forms; no page ever holds a value;
Operators and Viewers see their teams' names only, another team's secret is 404, the
Auditor gets 403 and no menu entry."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from capability.models import Secret
from capability.secrets import vault
from tests.support.app import unique


def signed_in(app, user: dict[str, Any]) -> FlaskClient:
    client = app.test_client()
    r = client.post("/login/", data={"username": user["username"], "password": user["password"]})
    assert r.status_code == 302
    return client


def find(app, team_id: str, name: str) -> Secret | None:
    with app.app_context():
        row = db.session.execute(
            select(Secret).where(Secret.team_id == team_id, Secret.name == name)
        ).scalar()
        if row is not None:
            db.session.expunge(row)
        db.session.remove()
        return row


def value_of(app, secret_id: str) -> str:
    with app.app_context():
        row = db.session.get(Secret, secret_id)
        assert row is not None
        value = vault.decrypt(app.config["SECRETS_KEY"] or "", app.config["SECRET_KEY"],
                              row.ciphertext)
        db.session.remove()
        return value


@pytest.fixture()
def admin(app, factory) -> tuple[FlaskClient, dict[str, Any]]:
    user = factory.user("Admin")
    return signed_in(app, user), user


def test_admin_adds_edits_and_deletes_a_secret_through_the_forms(app, factory, admin):
    client, user = admin
    team = factory.team()
    name = unique("ui").replace("-", "_")
    first, second = "ui-first-" + unique("v"), "ui-second-" + unique("v")
    pages: list[str] = []

    listing = client.get("/secrets/list/")
    assert listing.status_code == 200
    pages.append(listing.get_data(as_text=True))
    form = client.get("/secrets/add")
    assert form.status_code == 200
    html = form.get_data(as_text=True)
    pages.append(html)
    assert re.search(r'<input[^>]*name="value"[^>]*type="password"|'
                     r'<input[^>]*type="password"[^>]*name="value"', html), html
    assert f'value="{team["id"]}"' in html  # the team select offers the team

    r = client.post("/secrets/add", data={"team": team["id"], "name": name, "value": first})
    assert r.status_code == 302, r.get_data(as_text=True)
    saved = find(app, team["id"], name)
    assert saved is not None and value_of(app, saved.id) == first
    assert saved.created_by == user["username"]
    listing = client.get("/secrets/list/")
    html = listing.get_data(as_text=True)
    pages.append(html)
    assert name in html and "saved" in html and team["name"] in html

    edit = client.get(f"/secrets/edit/{saved.id}")
    assert edit.status_code == 200
    html = edit.get_data(as_text=True)
    pages.append(html)
    assert name in html  # which secret, read-only
    password = re.search(r'<input[^>]*type="password"[^>]*>', html)
    assert password is not None  # empty, not even masked
    assert re.sub(r'value=""', "", password.group(0)).count("value=") == 0, password.group(0)
    r = client.post(f"/secrets/edit/{saved.id}", data={"value": second})
    assert r.status_code == 302
    assert value_of(app, saved.id) == second
    pages.append(client.get("/secrets/list/").get_data(as_text=True))

    r = client.post(f"/secrets/delete/{saved.id}")
    assert r.status_code == 302
    assert find(app, team["id"], name) is None
    html = client.get("/secrets/list/").get_data(as_text=True)
    pages.append(html)
    assert "deleted" in html

    stored = saved.ciphertext
    for page in pages:
        for secret in (first, second, stored):
            assert secret not in page

    with app.app_context():
        actions = list(db.session.execute(
            select(AuditEvent.action).where(AuditEvent.target_type == "secret",
                                            AuditEvent.target_id == saved.id)
            .order_by(AuditEvent.seq)
        ).scalars())
        db.session.remove()
    assert actions == ["create", "update", "delete"]


def test_refused_forms_are_flashed_audited_and_change_nothing(app, factory, admin):
    client, user = admin
    team = factory.team()
    name = unique("dup").replace("-", "_")
    ok = client.post("/secrets/add", data={"team": team["id"], "name": name, "value": "one"})
    assert ok.status_code == 302
    cases = [
        ({"team": team["id"], "name": "Bad-Name", "value": "typed-value-1"},
         "name: must start with a lower-case letter"),
        ({"team": team["id"], "name": name, "value": "typed-value-2"},
         f"has a secret named &#39;{name}&#39; already"),
        ({"team": team["id"], "name": "empty_value", "value": ""}, "This field is required."),
    ]
    for data, words in cases:
        r = client.post("/secrets/add", data=data, follow_redirects=True)
        html = r.get_data(as_text=True)
        assert r.status_code == 200 and words in html, html
        assert data["value"] == "" or data["value"] not in html
    assert find(app, team["id"], "bad_name") is None
    assert find(app, team["id"], "empty_value") is None
    saved = find(app, team["id"], name)
    assert saved is not None and value_of(app, saved.id) == "one"
    r = client.post(f"/secrets/edit/{saved.id}", data={"value": ""})
    assert r.status_code == 200 and "This field is required." in r.get_data(as_text=True)
    assert value_of(app, saved.id) == "one"
    assert client.get("/secrets/edit/no-such-id").status_code == 404
    assert client.post("/secrets/delete/no-such-id").status_code == 404

    with app.app_context():
        refused = list(db.session.execute(
            select(AuditEvent).where(AuditEvent.actor == user["username"],
                                     AuditEvent.target_type == "secret",
                                     AuditEvent.outcome == "error")
            .order_by(AuditEvent.seq)
        ).scalars())
        text = repr([(e.action, e.after) for e in refused])
        db.session.remove()
    assert [e.action for e in refused] == ["create", "create", "create", "update", "delete"]
    assert "typed-value" not in text


def _admin_adds(app, factory, team: dict[str, Any], value: str) -> Secret:
    admin = signed_in(app, factory.user("Admin"))
    name = unique("hidden").replace("-", "_")
    admin.post("/secrets/add", data={"team": team["id"], "name": name, "value": value})
    saved = find(app, team["id"], name)
    assert saved is not None
    return saved


@pytest.mark.parametrize("role", ["Operator", "Viewer"])
def test_operators_and_viewers_see_their_teams_names_only(app, factory, role):
    team, other = factory.team(), factory.team()
    mine = _admin_adds(app, factory, team, "hidden-value")
    theirs = _admin_adds(app, factory, other, "hidden-value")
    client = signed_in(app, factory.user(role, teams=[team]))
    assert 'href="/secrets/list/"' in client.get("/").get_data(as_text=True)
    listing = client.get("/secrets/list/")
    html = listing.get_data(as_text=True)
    assert listing.status_code == 200 and mine.name in html and theirs.name not in html
    assert "/secrets/edit/" not in html and "/secrets/delete/" not in html
    assert "/secrets/add" not in html and "hidden-value" not in html
    for secret in (mine, theirs):
        for method, path, data in (
            ("GET", "/secrets/add", None),
            ("POST", "/secrets/add", {"team": team["id"], "name": "mine", "value": "x"}),
            ("GET", f"/secrets/edit/{secret.id}", None),
            ("POST", f"/secrets/edit/{secret.id}", {"value": "overwritten"}),
            ("POST", f"/secrets/delete/{secret.id}", None),
        ):
            r = client.open(path, method=method, data=data)
            assert r.status_code == 403, (role, method, path)
            assert theirs.name not in r.get_data(as_text=True)
        assert value_of(app, secret.id) == "hidden-value"
    assert find(app, team["id"], "mine") is None


def test_an_author_manages_their_teams_secrets_and_not_another_teams(app, factory):
    team, other = factory.team(), factory.team()
    theirs = _admin_adds(app, factory, other, "hidden-value")
    author = factory.user("Author", teams=[team])
    client = signed_in(app, author)
    assert 'href="/secrets/list/"' in client.get("/").get_data(as_text=True)
    form = client.get("/secrets/add").get_data(as_text=True)
    assert f'value="{team["id"]}"' in form and f'value="{other["id"]}"' not in form

    name = unique("mine").replace("-", "_")
    r = client.post("/secrets/add", data={"team": team["id"], "name": name, "value": "one"})
    assert r.status_code == 302, r.get_data(as_text=True)
    mine = find(app, team["id"], name)
    assert mine is not None and value_of(app, mine.id) == "one"
    html = client.get("/secrets/list/").get_data(as_text=True)
    assert name in html and f"/secrets/edit/{mine.id}" in html and theirs.name not in html
    assert client.get(f"/secrets/edit/{mine.id}").status_code == 200
    assert client.post(f"/secrets/edit/{mine.id}", data={"value": "two"}).status_code == 302
    assert value_of(app, mine.id) == "two"

    # Another team's secret: not found, whatever the form; a crafted add names a team
    # the form does not offer and fails validation.
    for method, path, data in (
        ("GET", f"/secrets/edit/{theirs.id}", None),
        ("POST", f"/secrets/edit/{theirs.id}", {"value": "overwritten"}),
        ("POST", f"/secrets/delete/{theirs.id}", None),
    ):
        r = client.open(path, method=method, data=data)
        assert r.status_code == 404, (method, path)
        assert theirs.name not in r.get_data(as_text=True)
    r = client.post("/secrets/add", data={"team": other["id"], "name": "crafted", "value": "x"})
    assert r.status_code == 200 and find(app, other["id"], "crafted") is None
    assert value_of(app, theirs.id) == "hidden-value"

    assert client.post(f"/secrets/delete/{mine.id}").status_code == 302
    assert find(app, team["id"], name) is None
    with app.app_context():
        rows = list(db.session.execute(
            select(AuditEvent).where(AuditEvent.actor == author["username"],
                                     AuditEvent.target_type == "secret")
            .order_by(AuditEvent.seq)
        ).scalars())
        got = [(e.action, e.outcome, e.target_id) for e in rows]
        text = repr([(e.before, e.after) for e in rows])
        db.session.remove()
    assert got == [("create", "success", mine.id), ("update", "success", mine.id),
                   ("update", "error", theirs.id), ("delete", "error", theirs.id),
                   ("create", "error", None), ("delete", "success", mine.id)]
    assert "hidden-value" not in text


def test_the_auditor_gets_403_and_no_menu_entry(app, factory):
    team = factory.team()
    saved = _admin_adds(app, factory, team, "hidden-value")
    client = signed_in(app, factory.user("Auditor", teams=[team]))
    for method, path, data in (
        ("GET", "/secrets/list/", None), ("GET", "/secrets/add", None),
        ("POST", "/secrets/add", {"team": team["id"], "name": "mine", "value": "x"}),
        ("GET", f"/secrets/edit/{saved.id}", None),
        ("POST", f"/secrets/edit/{saved.id}", {"value": "overwritten"}),
        ("POST", f"/secrets/delete/{saved.id}", None),
    ):
        r = client.open(path, method=method, data=data)
        assert r.status_code == 403, (method, path)
        assert saved.name not in r.get_data(as_text=True)
    assert "/secrets/" not in client.get("/").get_data(as_text=True)
    assert find(app, team["id"], "mine") is None
    assert value_of(app, saved.id) == "hidden-value"
