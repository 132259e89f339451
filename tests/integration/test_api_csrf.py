"""CSRF depth: an API mutation authenticated by the session cookie needs the page's
CSRF token; Bearer-token calls are unaffected."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.support.app import PASSWORD, api_token, auth, make_config, unique


@pytest.fixture(scope="module")
def csrf_app(app: Flask, service_urls: dict[str, str]) -> Flask:
    return create_app(make_config(service_urls, WTF_CSRF_ENABLED=True))


def _token_of(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page carries a CSRF token"
    return found.group(1)


def _browser(app: Flask, username: str) -> tuple[FlaskClient, str]:
    """A logged-in browser session and the CSRF token its pages carry."""
    client = app.test_client()
    token = _token_of(client.get("/login/").get_data(as_text=True))
    response = client.post("/login/", data={
        "username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client, _token_of(client.get("/teamview/add").get_data(as_text=True))


def _teams_named(client: FlaskClient, headers: dict[str, str], name: str) -> list[Any]:
    response = client.get("/api/v1/teams/", headers=headers,
                          query_string={"q": f"(filters:!((col:name,opr:eq,value:'{name}')))"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(response.get_json()["result"])


@pytest.fixture()
def admin(factory: Any) -> dict[str, Any]:
    return factory.user("Admin")


def test_session_mutation_without_the_token_is_refused_and_changes_nothing(csrf_app, admin):
    browser, _ = _browser(csrf_app, admin["username"])
    name = unique("csrf-team")
    refused = browser.post("/api/v1/teams/", json={"name": name})
    assert refused.status_code == 403
    assert "X-CSRFToken" in refused.get_json()["message"]
    bearer = auth(api_token(csrf_app.test_client(), admin["username"]))
    assert _teams_named(csrf_app.test_client(), bearer, name) == []
    # A wrong token is no better; PUT and DELETE are guarded like POST.
    wrong = browser.post("/api/v1/teams/", json={"name": name},
                         headers={"X-CSRFToken": "forged"})
    assert wrong.status_code == 403
    assert browser.put("/api/v1/teams/whatever", json={"name": name}).status_code == 403
    assert browser.delete("/api/v1/teams/whatever").status_code == 403


def test_session_mutation_with_the_token_works(csrf_app, admin):
    browser, token = _browser(csrf_app, admin["username"])
    name = unique("csrf-team")
    created = browser.post("/api/v1/teams/", json={"name": name}, headers={"X-CSRFToken": token})
    assert created.status_code == 201, created.get_data(as_text=True)


def test_session_reads_need_no_token(csrf_app, admin):
    browser, _ = _browser(csrf_app, admin["username"])
    assert browser.get("/api/v1/teams/").status_code == 200


def test_bearer_calls_are_unaffected(csrf_app, admin):
    client = csrf_app.test_client()
    headers = auth(api_token(client, admin["username"]))
    created = client.post("/api/v1/teams/", json={"name": unique("csrf-team")}, headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)


def test_api_login_from_a_logged_in_browser_needs_no_token(csrf_app, admin):
    browser, _ = _browser(csrf_app, admin["username"])
    response = browser.post("/api/v1/security/login",
                            json={"username": admin["username"], "password": PASSWORD})
    assert response.status_code == 200, response.get_data(as_text=True)
