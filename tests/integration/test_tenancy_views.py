"""The FAB screens of tenants, teams and memberships: an add form that selects nobody,
saving that goes back to where the form was opened, refused deletes said in words."""

from __future__ import annotations

import html
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Team, TeamMembership, Tenant
from tests.support.app import PASSWORD, api_token, auth, unique
from tests.support.pages import make_workflow, start


def signed_in(app: Flask, factory: Any) -> tuple[dict[str, Any], FlaskClient]:
    admin = factory.user("Admin")
    client = app.test_client()
    r = client.post("/login/", data={"username": admin["username"], "password": PASSWORD})
    assert r.status_code == 302
    return admin, client


def flashes(client: FlaskClient, url: str) -> list[str]:
    page = client.get(url).get_data(as_text=True)
    found = re.findall(
        r'class="alert alert-[a-z]+"[^>]*>\s*<button[^>]*>[^<]*</button>\s*(.*?)\s*</div>',
        page, re.S)
    return [html.unescape(f) for f in found]


def default_tenant_id(app: Flask) -> str:
    with app.app_context():
        return str(db.session.execute(
            select(Tenant.id).where(Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one())


def count(app: Flask, model: Any, *where: Any) -> int:
    with app.app_context():
        n = db.session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()
        db.session.remove()
        return int(n)


# -- Add Team Membership ---------------------------------------------------------------
def test_add_membership_form_selects_no_user_and_no_team(app, factory):
    factory.user("Viewer")
    factory.team()
    _, client = signed_in(app, factory)
    page = client.get("/teammembershipview/add").get_data(as_text=True)
    for name, prompt in (("user", "Choose a user"), ("team", "Choose a team")):
        select_html = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', page, re.S)
        assert select_html, name
        options = re.findall(r"<option([^>]*)>([^<]*)</option>", select_html.group(1))
        assert len(options) >= 2, options
        first_attrs, first_text = options[0]
        assert 'value="__None"' in first_attrs and first_text == prompt
        # The empty choice is the selected one, nobody else.
        assert [text for attrs, text in options if "selected" in attrs] == [prompt]


def test_add_membership_without_choosing_a_user_is_refused_and_adds_nothing(app, factory):
    team = factory.team()
    _, client = signed_in(app, factory)
    before = count(app, TeamMembership)
    r = client.post("/teammembershipview/add", data={"team": team["id"], "user": "__None"})
    assert r.status_code == 200  # the form again, with the reason under the field
    assert "This field is required." in r.get_data(as_text=True)
    assert count(app, TeamMembership) == before


def test_add_membership_from_a_team_s_page_still_fills_in_the_team(app, factory):
    team = factory.team()
    viewer = factory.user("Viewer")
    _, client = signed_in(app, factory)
    show = f"/teamview/show/{team['id']}"
    client.get(show)
    add = f"/teammembershipview/add?_flt_0_team={team['id']}"
    page = client.get(add, headers={"Referer": f"http://localhost{show}"}).get_data(as_text=True)
    assert 'name="team"' not in page  # filled in from the link, not asked
    r = client.post(add, data={"user": str(viewer["id"])})
    assert r.status_code == 302 and r.headers["Location"].endswith(show)
    assert count(app, TeamMembership, TeamMembership.team_id == team["id"]) == 1


# -- where saving lands ----------------------------------------------------------------
def test_saving_a_team_goes_back_to_the_teams_list_even_when_posted_again(app, factory):
    _, client = signed_in(app, factory)
    tenant_id = default_tenant_id(app)
    client.get("/tenantview/list/")
    client.get("/teamview/list/")
    client.get("/teamview/add", headers={"Referer": "http://localhost/teamview/list/"})
    r = client.post("/teamview/add", data={"name": unique("t"), "tenant": tenant_id})
    assert r.status_code == 302 and r.headers["Location"].endswith("/teamview/list/")
    client.get(r.headers["Location"])
    # The Back button brings the form back from the browser's cache (no request), and
    # it is saved again: FAB's history then led to the tenants list.
    r = client.post("/teamview/add", data={"name": unique("t"), "tenant": tenant_id})
    assert r.status_code == 302 and r.headers["Location"].endswith("/teamview/list/")


def test_editing_a_team_goes_back_to_the_teams_list_even_when_posted_again(app, factory):
    team = factory.team()
    _, client = signed_in(app, factory)
    edit = f"/teamview/edit/{team['id']}"
    client.get("/tenantview/list/")
    client.get("/teamview/list/?psize_TeamView=25")
    client.get(edit, headers={"Referer": "http://localhost/teamview/list/?psize_TeamView=25"})
    for name in (unique("t"), unique("t")):
        r = client.post(edit, data={"name": name})
        assert r.status_code == 302
        assert r.headers["Location"].endswith("/teamview/list/?psize_TeamView=25")
        client.get(r.headers["Location"])
    with app.app_context():
        assert db.session.get(Team, team["id"]).name == name


def test_saving_a_form_opened_from_a_tenant_s_page_goes_back_to_that_page(app, factory):
    tenant = factory.tenant()
    team = factory.team(tenant=tenant.name)
    _, client = signed_in(app, factory)
    show = f"/tenantview/show/{tenant.id}"
    client.get(show)
    edit = f"/teamview/edit/{team['id']}?_flt_0_tenant={tenant.id}"
    client.get(edit, headers={"Referer": f"http://localhost{show}"})
    r = client.post(edit, data={"name": unique("t")})
    assert r.status_code == 302 and r.headers["Location"].endswith(show)


def test_a_form_opened_without_a_referer_or_from_another_site_goes_to_its_list(app, factory):
    _, client = signed_in(app, factory)
    tenant_id = default_tenant_id(app)
    client.get("/teamview/add", headers={"Referer": "https://evil.example/teamview/list/"})
    r = client.post("/teamview/add", data={"name": unique("t"), "tenant": tenant_id})
    assert r.status_code == 302 and r.headers["Location"].endswith("/teamview/list/")


def test_deleting_a_team_from_its_own_page_goes_to_the_list(app, factory):
    team = factory.team()
    _, client = signed_in(app, factory)
    show = f"http://localhost/teamview/show/{team['id']}"
    r = client.post(f"/teamview/delete/{team['id']}", headers={"Referer": show})
    assert r.status_code == 302 and r.headers["Location"].endswith("/teamview/list/")
    assert count(app, Team, Team.id == team["id"]) == 0


# -- refused deletes -------------------------------------------------------------------
def test_deleting_a_team_that_owns_rows_says_what_blocks_it_and_changes_nothing(app, factory):
    admin, client = signed_in(app, factory)
    team = factory.team()
    member = factory.user("Viewer", teams=[team])
    headers = auth(api_token(app.test_client(), admin["username"]))
    api = app.test_client()
    kept = make_workflow(api, headers, team["name"], [{"id": "a", "type": "noop"}])
    gone = make_workflow(api, headers, team["name"], [{"id": "a", "type": "noop"}])
    for _ in range(3):
        start(api, headers, kept)
    assert api.delete(f"/api/v1/workflows/{gone}", headers=headers).status_code == 200

    listing = "/teamview/list/"
    client.get(listing)
    r = client.post(f"/teamview/delete/{team['id']}",
                    headers={"Referer": f"http://localhost{listing}"})
    assert r.status_code == 302 and r.headers["Location"].endswith(listing)
    expected = (f"Team {team['name']!r} still owns 2 workflows (1 of them deleted) "
                "and 3 runs: delete or move them first")
    shown = flashes(client, listing)
    assert expected in shown, shown
    assert not any("apg_" in f or "IntegrityError" in f for f in shown), shown
    assert count(app, Team, Team.id == team["id"]) == 1
    assert count(app, TeamMembership, TeamMembership.user_id == member["id"]) == 1

    # The API says the same, with 409.
    r = api.delete(f"/api/v1/teams/{team['id']}", headers=headers)
    assert r.status_code == 409 and r.get_json()["message"] == expected


def test_deleting_a_tenant_that_has_teams_says_so_and_changes_nothing(app, factory):
    _, client = signed_in(app, factory)
    tenant = factory.tenant()
    factory.team(tenant=tenant.name)
    factory.team(tenant=tenant.name)
    r = client.post(f"/tenantview/delete/{tenant.id}",
                    headers={"Referer": "http://localhost/tenantview/list/"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/tenantview/list/")
    expected = f"Tenant {tenant.name!r} still owns 2 teams: delete or move them first"
    assert expected in flashes(client, "/tenantview/list/")
    assert count(app, Tenant, Tenant.id == tenant.id) == 1
    assert count(app, Team, Team.tenant_id == tenant.id) == 2


def test_one_blocking_row_is_said_in_the_singular(app, factory):
    _, client = signed_in(app, factory)
    tenant = factory.tenant()
    factory.team(tenant=tenant.name)
    client.post(f"/tenantview/delete/{tenant.id}")
    assert (f"Tenant {tenant.name!r} still owns 1 team: delete or move it first"
            in flashes(client, "/tenantview/list/"))
