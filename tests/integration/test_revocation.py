"""Revocation: a password, role or activity change and a logout end every session and
token of the user at once, on every process (two app instances on one database)."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.support.app import PASSWORD, auth, make_config

NEW_PASSWORD = "Other-Pass-456!"


@pytest.fixture(scope="module")
def other_app(app: Flask, service_urls: dict[str, str]) -> Flask:
    """A second web process on the same database and Redis."""
    return create_app(make_config(service_urls))


def _tokens(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/v1/security/login", json={
        "username": username, "password": password, "refresh": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    return {"access": body["access_token"], "refresh": body["refresh_token"]}


def _session(app: Flask, username: str, password: str = PASSWORD) -> FlaskClient:
    client = app.test_client()
    response = client.post("/login/", data={"username": username, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert _session_works(client)
    return client


def _session_works(client: FlaskClient) -> bool:
    response = client.get("/users/userinfo/")
    return response.status_code == 200


def _access_works(client: FlaskClient, token: str) -> bool:
    response = client.get("/api/v1/teams/", headers=auth(token))
    if response.status_code == 401:
        assert response.get_json()["message"] == "Token has been revoked"
        return False
    assert response.status_code == 200, response.get_data(as_text=True)
    return True


def _refresh_works(client: FlaskClient, token: str) -> bool:
    response = client.post("/api/v1/security/refresh", headers=auth(token))
    assert response.status_code in (200, 401), response.get_data(as_text=True)
    return response.status_code == 200


def _credentials(app: Flask, other_app: Flask, username: str) -> dict[str, Any]:
    """Tokens issued by one process, a session on each."""
    return {
        "tokens": _tokens(app.test_client(), username),
        "here": _session(app, username),
        "there": _session(other_app, username),
    }


def _assert_all_revoked(other_app: Flask, creds: dict[str, Any]) -> None:
    probe = other_app.test_client()
    assert not _access_works(probe, creds["tokens"]["access"])
    assert not _refresh_works(probe, creds["tokens"]["refresh"])
    assert not _session_works(creds["here"])
    assert not _session_works(creds["there"])


def _admin_put(client: FlaskClient, admin_token: str, user_id: int, body: dict[str, Any]) -> None:
    response = client.put(f"/api/v1/security/users/{user_id}", json=body,
                          headers=auth(admin_token))
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.fixture()
def admin_token(client: FlaskClient, factory: Any) -> str:
    admin = factory.user("Admin")
    return _tokens(client, admin["username"])["access"]


def test_credentials_work_on_both_processes_until_revoked(app, other_app, factory):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    probe = other_app.test_client()
    assert _access_works(probe, creds["tokens"]["access"])
    assert _refresh_works(probe, creds["tokens"]["refresh"])
    assert _session_works(creds["here"]) and _session_works(creds["there"])


def test_password_change_by_an_admin_revokes_everything(app, other_app, client, factory,
                                                        admin_token):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    _admin_put(client, admin_token, user["id"], {"password": NEW_PASSWORD})
    _assert_all_revoked(other_app, creds)
    # The new password works, and so do the credentials it gives.
    fresh = _tokens(other_app.test_client(), user["username"], NEW_PASSWORD)
    assert _access_works(app.test_client(), fresh["access"])
    assert _session_works(_session(app, user["username"], NEW_PASSWORD))


def test_own_password_change_keeps_this_session_and_revokes_the_others(app, other_app,
                                                                       factory):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    changed = creds["here"].post("/resetmypassword/form", data={
        "password": NEW_PASSWORD, "conf_password": NEW_PASSWORD})
    assert changed.status_code == 302, changed.get_data(as_text=True)
    assert _session_works(creds["here"])
    assert not _session_works(creds["there"])
    probe = app.test_client()
    assert not _access_works(probe, creds["tokens"]["access"])
    assert not _refresh_works(probe, creds["tokens"]["refresh"])


def test_role_change_revokes_everything(app, other_app, client, factory, admin_token):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    roles = client.get("/api/v1/security/roles/", headers=auth(admin_token),
                       query_string={"q": "(page_size:100)"}).get_json()["result"]
    operator = next(r["id"] for r in roles if r["name"] == "Operator")
    _admin_put(client, admin_token, user["id"], {"roles": [operator]})
    _assert_all_revoked(other_app, creds)


def test_deactivation_revokes_everything_even_once_reactivated(app, other_app, client,
                                                               factory, admin_token):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    _admin_put(client, admin_token, user["id"], {"active": False})
    _admin_put(client, admin_token, user["id"], {"active": True})
    _assert_all_revoked(other_app, creds)


def test_a_change_of_name_revokes_nothing(app, other_app, client, factory, admin_token):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    _admin_put(client, admin_token, user["id"], {"first_name": "Renamed"})
    assert _access_works(other_app.test_client(), creds["tokens"]["access"])
    assert _session_works(creds["there"])


def test_logout_is_a_post_that_revokes_everything(app, other_app, factory):
    user = factory.user("Viewer")
    creds = _credentials(app, other_app, user["username"])
    # A GET only asks (a link or an image elsewhere must not log anyone out).
    page = creds["here"].get("/logout/")
    assert page.status_code == 200
    assert re.search(r'<form method="post" action="/logout/"', page.get_data(as_text=True))
    assert _session_works(creds["here"])
    assert _access_works(other_app.test_client(), creds["tokens"]["access"])

    out = creds["here"].post("/logout/")
    assert out.status_code == 302
    _assert_all_revoked(other_app, creds)


def test_logout_is_audited(app, factory, admin_token, client):
    user = factory.user("Viewer")
    session = _session(app, user["username"])
    session.post("/logout/")
    rows = client.get("/api/v1/audit/", headers=auth(admin_token), query_string={
        "actor": user["username"], "action": "logout"}).get_json()["result"]
    assert [r["outcome"] for r in rows] == ["success"], rows


def test_the_navbar_logs_out_with_a_form_post(app, factory):
    user = factory.user("Viewer")
    session = _session(app, user["username"])
    page = session.get("/users/userinfo/").get_data(as_text=True)
    assert re.search(r'<form class="apg-logout-form" method="post" action="/logout/">', page)
    assert 'href="/logout/"' not in page


def test_refresh_tokens_live_one_day_by_default(client, factory):
    user = factory.user("Viewer")
    refresh = _tokens(client, user["username"])["refresh"]
    claims = jwt.decode(refresh, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 86400


def test_refresh_token_lifetime_is_configurable(app, service_urls, factory):
    short = create_app(make_config(service_urls, JWT_REFRESH_TOKEN_EXPIRES=120))
    user = factory.user("Viewer")
    refresh = _tokens(short.test_client(), user["username"])["refresh"]
    claims = jwt.decode(refresh, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_token_is_revoked_in_another_os_process(app, client, factory, admin_token, processes):
    port = _free_port()
    server = processes(f"run --no-reload --port {port}")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, "the web process exited"
        try:
            if _get(f"{base}/health") in (200, 503):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the web process did not start"
        time.sleep(0.5)

    user = factory.user("Viewer")
    access = _tokens(client, user["username"])["access"]
    assert _get(f"{base}/api/v1/teams/", auth(access)) == 200
    _admin_put(client, admin_token, user["id"], {"password": NEW_PASSWORD})
    assert _get(f"{base}/api/v1/teams/", auth(access)) == 401
