"""Login protection, password policy, CSRF, headers and the secret-key guard."""

from __future__ import annotations

import re

import pytest

from app import InsecureConfiguration, create_app
from tests.support.app import PASSWORD, api_token, auth, make_config, unique


@pytest.fixture(scope="module")
def limited_app(app, service_urls):
    return create_app(make_config(service_urls, AUTH_RATE_LIMIT="3 per minute"))


def test_api_login_is_rate_limited(limited_app, factory):
    user = factory.user("Viewer")
    client = limited_app.test_client()
    body = {"username": user["username"], "password": "wrong", "provider": "db"}
    codes = [client.post("/api/v1/security/login", json=body,
                         environ_base={"REMOTE_ADDR": "10.9.9.1"}).status_code for _ in range(5)]
    assert codes[:3] == [401, 401, 401]
    assert codes[3:] == [429, 429]
    # Another client address is not affected.
    ok = client.post("/api/v1/security/login", environ_base={"REMOTE_ADDR": "10.9.9.2"},
                     json={**body, "password": PASSWORD})
    assert ok.status_code == 200


def test_form_login_is_rate_limited(limited_app, factory):
    user = factory.user("Viewer")
    client = limited_app.test_client()
    data = {"username": user["username"], "password": "wrong"}
    answers = [client.post("/login/", data=data, environ_base={"REMOTE_ADDR": "10.9.8.1"})
               for _ in range(4)]
    assert answers[-1].status_code == 429
    # A page in the app's layout that says what happened and how long to wait, not
    # Werkzeug's bare "Too Many Requests".
    page = answers[-1].get_data(as_text=True)
    assert 'id="error-429"' in page and "navbar" in page, page
    assert "Too many requests" in page and "(3 per 1 minute)" in page
    assert "Wait up to 60 seconds, then try again." in page
    assert 'id="error-retry-plain" href="/login/"' in page


def test_password_complexity_on_user_api(client, factory):
    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    name = unique("weak")
    r = client.post("/api/v1/security/users/", headers=headers, json={
        "username": name, "first_name": "W", "last_name": "P", "email": f"{name}@x.io",
        "active": True, "password": "password", "roles": [1]})
    assert r.status_code == 400
    assert "Password needs" in str(r.get_json())


def test_password_rules():
    from app.security.passwords import generate, problems

    assert problems("short") != []
    assert problems("alllowercase1!") == ["an upper-case letter"]
    assert problems("Newcomer-Pass-1!") == []
    assert problems(generate()) == []


def test_forms_require_csrf(app, service_urls, factory):
    csrf_app = create_app(make_config(service_urls, WTF_CSRF_ENABLED=True))
    client = csrf_app.test_client()
    user = factory.user("Admin")
    page = client.get("/login/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, "the login form carries a CSRF token"
    refused = client.post("/login/", data={"username": user["username"], "password": PASSWORD})
    assert refused.status_code == 400
    accepted = client.post("/login/", data={"username": user["username"], "password": PASSWORD,
                                             "csrf_token": token.group(1)})
    assert accepted.status_code == 302
    # Every add form of ours carries it too.
    form = client.get("/teamview/add").get_data(as_text=True)
    assert 'name="csrf_token"' in form
    no_token = client.post("/teamview/add", data={"name": unique("csrf")})
    assert no_token.status_code == 400


def test_security_headers(client):
    r = client.get("/login/")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'nonce="{nonce}"' in r.get_data(as_text=True)
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert r.headers["X-Request-ID"]


def test_pages_use_no_external_assets(client, factory):
    user = factory.user("Admin")
    client.post("/login/", data={"username": user["username"], "password": PASSWORD})
    for path in ("/", "/audit/list/", "/teamview/list/", "/capabilities/", "/swagger/v1"):
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r'(src|href)="(https?:)?//', html), path


def test_default_secret_key_is_refused_outside_development(service_urls):
    import config

    with pytest.raises(InsecureConfiguration):
        create_app(make_config(service_urls, APG_ENV="production",
                               SECRET_KEY=config.DEFAULT_SECRET_KEY))
    with pytest.raises(InsecureConfiguration):
        create_app(make_config(service_urls, SECRET_KEY="too-short"))


def test_openapi_and_swagger(client, factory):
    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    spec = client.get("/api/v1/_openapi", headers=headers)
    assert spec.status_code == 200
    paths = spec.get_json()["paths"]
    for path in ("/teams/", "/teams/{pk}", "/teams/{pk}/members", "/tenants/", "/audit/",
                 "/audit/export.csv", "/capabilities/"):
        assert "/api/v1" + path in paths, path
    client.post("/login/", data={"username": admin["username"], "password": PASSWORD})
    assert client.get("/swagger/v1").status_code == 200


def test_token_errors_are_401_with_message(client):
    for header in ("Bearer not-a-jwt", "Bearer a.b.c"):
        r = client.get("/api/v1/teams/", headers={"Authorization": header})
        assert r.status_code == 401 and r.get_json()["message"], header
    r = client.get("/api/v1/teams/")
    assert r.status_code == 401 and "message" in r.get_json()


def test_oversize_login_is_413_not_500(client, app):
    pad = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    r = client.post("/api/v1/security/login", json={"username": "a", "password": pad})
    assert r.status_code == 413 and r.get_json()["message"]


def test_api_login_without_provider_uses_db(client, factory):
    user = factory.user("Viewer")
    r = client.post("/api/v1/security/login",
                    json={"username": user["username"], "password": PASSWORD})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["access_token"] and "refresh_token" not in r.get_json()
    r = client.post("/api/v1/security/login",
                    json={"username": user["username"], "password": PASSWORD, "refresh": True})
    assert r.status_code == 200 and r.get_json()["refresh_token"]
    wrong = client.post("/api/v1/security/login",
                        json={"username": user["username"], "password": "Wrong-Pass-123!"})
    assert wrong.status_code == 401 and wrong.get_json()["message"]


MALFORMED_LOGINS = [
    # (body as sent, status, the path an error names or None)
    ('{"username": "a", "password"', 400, None),            # not JSON
    ("", 400, None),                                        # no body
    ('["admin", "secret"]', 422, "$"),                      # not an object
    ('"admin"', 422, "$"),
    ("null", 400, None),
    ('{"password": "x"}', 422, "username"),
    ('{"username": "admin"}', 422, "password"),
    ('{"username": 5, "password": "x"}', 422, "username"),
    ('{"username": "admin", "password": ["x"]}', 422, "password"),
    ('{"username": "", "password": "x"}', 422, "username"),
    ('{"username": "admin", "password": "x", "provider": "oauth"}', 422, "provider"),
    ('{"username": "admin", "password": "x", "provider": "ldap"}', 422, "provider"),
    ('{"username": "admin", "password": "x", "provider": 1}', 422, "provider"),
    ('{"username": "admin", "password": "x", "refresh": "yes"}', 422, "refresh"),
    ('{"username": "admin", "password": "x", "remember": true}', 422, "remember"),
    ('{"username": "admin", "password": "\\u0000"}', 422, "password"),
]


@pytest.mark.parametrize(("raw", "status", "path"), MALFORMED_LOGINS)
def test_malformed_api_login_is_400_or_422_and_records_no_login(app, client, raw, status, path):
    from sqlalchemy import func, select

    from app.audit.models import AuditEvent
    from app.extensions import db

    def logins() -> int:
        with app.app_context():
            return int(db.session.execute(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "login")).scalar_one())

    before = logins()
    r = client.post("/api/v1/security/login", data=raw, content_type="application/json")
    assert r.status_code == status, (raw, r.get_data(as_text=True))
    body = r.get_json()
    assert isinstance(body["message"], str) and body["message"], body
    if path is not None:
        assert path in [e["path"] for e in body["errors"]], body
        assert all(e["message"] for e in body["errors"]), body
    assert logins() == before  # nobody was authenticated, so no login event


def test_api_login_body_that_is_not_json_at_all_is_400(client):
    r = client.post("/api/v1/security/login", data={"username": "a", "password": "b"})
    assert r.status_code == 400 and r.get_json()["message"]


def test_forbidden_page_keeps_the_layout(app, factory):
    viewer = factory.user("Viewer")
    client = app.test_client()
    client.post("/login/", data={"username": viewer["username"], "password": PASSWORD})
    r = client.get("/audit/list/")
    assert r.status_code == 403
    html = r.get_data(as_text=True)
    assert 'id="error-403"' in html and "navbar" in html
