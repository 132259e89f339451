"""Malformed input is a 4xx with a message on every API and page, never a 500, and
changes nothing (app.input_guard): negative or huge pages, a q FAB's rison parser
cannot read, filter values of the wrong type, NUL characters anywhere, JSON nested
100,000 deep, an unknown list action, a bad sort column."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import DataError

from app.audit.models import AuditEvent
from app.errors import DATA_ERROR_MESSAGE
from app.extensions import db
from app.models import Team
from tests.support.app import api_token, auth

# FAB ModelRestApi lists: ours and FAB's own security APIs.
LISTS = ["/api/v1/teams/", "/api/v1/tenants/", "/api/v1/workflows/", "/api/v1/runs/",
         "/api/v1/audit/", "/api/v1/secrets/", "/api/v1/security/users/",
         "/api/v1/security/roles/"]
NUL_REASON = "contains a NUL character (\\u0000), which cannot be stored"


@pytest.fixture(scope="module")
def admin_h(app: Flask) -> dict[str, str]:
    from tests.support.app import Factory

    user = Factory(app).user("Admin")
    return auth(api_token(app.test_client(), user["username"]))


@pytest.fixture(scope="module")
def page_client(app: Flask) -> Any:
    from tests.support.app import Factory

    user = Factory(app).user("Admin")
    client = app.test_client()
    client.post("/login/", data={"username": user["username"], "password": user["password"]})
    return client


def teams(app: Flask) -> int:
    with app.app_context():
        count = db.session.execute(select(func.count()).select_from(Team)).scalar_one()
        db.session.remove()
        return int(count)


def errors_of(response: Any) -> dict[str, str]:
    body = response.get_json()
    assert body["message"], body
    return {e["path"]: e["message"] for e in body.get("errors", [])}


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(("q", "where", "reason"), [
    ("(page:-1,page_size:10)", "q.page", "must be between 0 and 2147483647"),
    ("(page:99999999999999999999)", "q.page", "must be between 0 and 2147483647"),
    ("(page:0,page_size:-5)", "q.page_size", "must be between 0 and 2147483647"),
    ("4.6694737685941405e+80", "q", "not a rison value"),
    ('{"page": -1, "page_size": 10}', "q.page", "must be between 0 and 2147483647"),  # JSON
])
def test_paging_and_unreadable_q_are_400(client, admin_h, path, q, where, reason):
    r = client.get(path, headers=admin_h, query_string={"q": q})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert errors_of(r) == {where: reason}


@pytest.mark.parametrize(("path", "flt", "reason"), [
    ("/api/v1/teams/", "(col:name,opr:ct,value:1.5)", "must be a string"),
    ("/api/v1/teams/", "(col:name,opr:eq,value:1.5)", "must be a string"),
    ("/api/v1/teams/", "(col:name,opr:eq,value:!(a))", "must be a string"),
    ("/api/v1/secrets/", "(col:team,opr:rel_o_m,value:1.5)", "must be a string"),
    ("/api/v1/runs/", "(col:team,opr:rel_o_m,value:7)", "must be a string"),
    ("/api/v1/security/users/", "(col:username,opr:sw,value:2)", "must be a string"),
    ("/api/v1/security/users/", "(col:roles,opr:rel_m_m,value:abc)",
     "must be an integer between -9223372036854775807 and 9223372036854775807"),
])
def test_filter_values_of_the_wrong_type_are_400(client, admin_h, path, flt, reason):
    r = client.get(path, headers=admin_h, query_string={"q": f"(filters:!({flt}))"})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert errors_of(r) == {"q.filters[0].value": reason}


def test_a_well_typed_filter_still_works(client, admin_h, factory):
    team = factory.team()
    r = client.get("/api/v1/teams/", headers=admin_h, query_string={
        "q": f"(filters:!((col:name,opr:eq,value:'{team['name']}')))"})
    assert r.status_code == 200 and r.get_json()["ids"] == [team["id"]]


def test_a_bad_sort_column_is_400_on_apis_and_pages(client, admin_h, page_client):
    for path in LISTS:
        r = client.get(path, headers=admin_h,
                       query_string={"q": "(order_column:nope,order_direction:asc)"})
        assert r.status_code == 400 and "nope" in r.get_json()["message"], path
    r = page_client.get("/teamview/list/?_oc_TeamView=nope&_od_TeamView=asc")
    assert r.status_code == 400
    assert "Invalid sort column: _oc_TeamView: one of name, created_at" in r.get_data(
        as_text=True)


@pytest.mark.parametrize(("args", "reason"), [
    ("page_TeamView=-1", "page_TeamView: must be between 0 and 2147483647"),
    ("psize_TeamView=abc", "psize_TeamView: must be an integer"),
    ("page_UserDBModelView=99999999999999999999",
     "page_UserDBModelView: must be between 0 and 2147483647"),
])
def test_list_page_arguments_are_400(page_client, args, reason):
    view = "users" if "UserDBModelView" in args else "teamview"
    r = page_client.get(f"/{view}/list/?{args}")
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert reason in page
    # The person did not type these names (a bookmark, an old link): a way back to the
    # same list without them.
    assert f'id="error-retry-plain" href="/{view}/list/"' in page


@pytest.mark.parametrize(("method", "url", "body", "where"), [
    ("post", "/api/v1/teams/", {"name": "a\x00b"}, "name"),
    ("post", "/api/v1/teams/", {"name": "ok", "k\x00": 1}, "k\\u0000"),
    ("post", "/api/v1/workflows/validate",
     {"definition": {"name": "n", "tasks": [{"id": "a", "type": "noop", "x": ["\x00"]}]}},
     "definition.tasks[0].x[0]"),
    ("put", "/api/v1/teams/{team}", {"name": "a\x00"}, "name"),
    ("delete", "/api/v1/teams/a%00b", None, "pk"),
    ("get", "/api/v1/teams/a%00b", None, "pk"),
    ("get", "/api/v1/audit/?actor=a%00", None, "actor"),
])
def test_nul_anywhere_is_422_naming_the_field(app, client, admin_h, factory, method, url,
                                              body, where):
    team = factory.team()
    before = teams(app)
    r = getattr(client, method)(url.format(team=team["id"]), headers=admin_h, json=body)
    assert r.status_code == 422, r.get_data(as_text=True)
    assert errors_of(r) == {where: NUL_REASON}
    assert teams(app) == before


def test_nul_in_a_form_field_is_422_and_audited(app, page_client):
    before = teams(app)
    r = page_client.post("/teamview/add", data={"name": "a\x00b"})
    assert r.status_code == 422
    assert "name: contains a NUL character" in r.get_data(as_text=True)
    assert teams(app) == before


def test_a_refused_nul_url_is_audited_without_the_nul(app, client, factory):
    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    assert client.delete("/api/v1/teams/x%00y", headers=headers).status_code == 422
    with app.app_context():
        event = db.session.execute(
            select(AuditEvent).where(AuditEvent.actor == admin["username"])
            .order_by(AuditEvent.seq.desc())).scalars().first()
        assert event.outcome == "error"
        assert event.target_id == "/api/v1/teams/x\\u0000y"
        db.session.remove()


@pytest.mark.parametrize("url", ["/api/v1/teams/", "/api/v1/workflows/validate",
                                 "/api/v1/security/login"])
def test_json_nested_100000_deep_is_400(app, client, admin_h, url):
    before = teams(app)
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post(url, data=deep, headers={**admin_h, "Content-Type": "application/json"})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["message"] == "Request body is nested deeper than 100 levels"
    assert teams(app) == before


def test_json_nesting_is_limited_below_what_the_parser_accepts(client, admin_h):
    payload = json.dumps({"definition": json.loads("[" * 150 + "]" * 150)})
    r = client.post("/api/v1/workflows/validate", data=payload,
                    headers={**admin_h, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.get_json()["errors"][0]["message"] == "too deeply nested"


@pytest.mark.parametrize("signed_in", [False, True])
def test_an_unknown_list_action_is_400(app, page_client, signed_in):
    client = page_client if signed_in else app.test_client()
    r = client.post("/teamview/action_post", data={"action": "nope", "rowid": "x"})
    assert r.status_code == 400
    assert "Unknown action: action: &#39;nope&#39; is not an action of this list" in (
        r.get_data(as_text=True))
    r = client.post("/teamview/action_post", data={"rowid": "x"})
    assert r.status_code == 400


def test_a_value_the_database_refuses_is_422_without_its_sql(app, service_urls):
    """The safety net behind the checks: a DataError raised in an API handler (FAB's
    @safe) or a page is a 422 that shows no SQL."""
    from app.tenancy.api import TeamApi

    api = next(v for v in app.extensions["appbuilder"].baseviews if isinstance(v, TeamApi))
    with app.test_request_context("/api/v1/teams/"):
        try:
            raise DataError("SELECT secret_sql", {}, Exception("numeric field overflow"))
        except DataError:
            response = api.response_500()
    assert response.status_code == 422
    assert response.get_json() == {"message": DATA_ERROR_MESSAGE}

    from app import create_app
    from tests.support.app import make_config

    other = create_app(make_config(service_urls))  # a route can be added before a request

    @other.route("/boom")
    def boom() -> Any:
        raise DataError("SELECT secret_sql", {}, Exception("numeric field overflow"))

    r = other.test_client().get("/boom")
    assert r.status_code == 422 and "secret_sql" not in r.get_data(as_text=True)
