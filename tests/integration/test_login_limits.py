"""Login limits: failures counted per account and per address in Redis, the form and
the API together, across processes; a lockout with backoff that always expires."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.support.app import PASSWORD, api_token, auth, make_config, unique

WRONG = "Wrong-Pass-999!"
LIMITS = {
    "LOGIN_MAX_FAILURES": 3,
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 4,
    "LOGIN_LOCKOUT_SECONDS": 1,
    "LOGIN_LOCKOUT_MAX_SECONDS": 4,
}


@pytest.fixture(scope="module")
def limited(app: Flask, service_urls: dict[str, str]) -> tuple[Flask, Flask]:
    """Two web processes sharing the database and Redis, with small limits."""
    return (create_app(make_config(service_urls, **LIMITS)),
            create_app(make_config(service_urls, **LIMITS)))


_next_address = iter(range(1, 250))


def _address() -> dict[str, Any]:
    """A client address of its own, so that one test's failures never lock another's."""
    return {"REMOTE_ADDR": f"10.77.{next(_next_address)}.1"}


def _api(client: FlaskClient, username: str, password: str, env: dict[str, Any]) -> Any:
    return client.post("/api/v1/security/login", environ_base=env,
                       json={"username": username, "password": password})


def _form(client: FlaskClient, username: str, password: str, env: dict[str, Any]) -> Any:
    return client.post("/login/", environ_base=env,
                       data={"username": username, "password": password})


def test_account_lockout_counts_form_and_api_on_every_process(limited, factory, client):
    one, two = limited
    user = factory.user("Viewer")
    name = user["username"]
    # Each failure from another address: only the account's count can lock.
    assert _api(one.test_client(), name, WRONG, _address()).status_code == 401
    assert _form(two.test_client(), name, WRONG, _address()).status_code == 302
    assert _api(two.test_client(), name, WRONG, _address()).status_code == 401

    locked = _api(one.test_client(), name, PASSWORD, _address())
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "1"
    assert "Too many failed logins for this account" in locked.get_json()["message"]

    page = _form(two.test_client(), name, PASSWORD, _address())
    assert page.status_code == 429
    assert "Too many failed logins for this account" in page.get_data(as_text=True)
    assert page.headers["Retry-After"] == "1"

    admin = factory.user("Admin")
    token = api_token(client, admin["username"])
    rows = client.get("/api/v1/audit/", headers=auth(token), query_string={
        "actor": name, "action": "login_lockout"}).get_json()["result"]
    assert len(rows) == 1 and rows[0]["outcome"] == "denied", rows


def test_the_failure_that_starts_a_lockout_says_so_on_the_form(limited, factory):
    one, _ = limited
    name = factory.user("Viewer")["username"]
    client = one.test_client()
    env = _address()
    for _ in range(2):
        assert _form(client, name, WRONG, env).status_code == 302
    # The third failure locks the account: the form says so now, with the wait, rather
    # than "Invalid login" alone (which invites typing again at once).
    third = _form(client, name, WRONG, env)
    assert third.status_code == 429
    page = third.get_data(as_text=True)
    assert "Invalid login" in page
    assert "Too many failed logins for this account: try again in 1 second." in page


def test_lockout_doubles_and_always_expires(limited, factory):
    one, two = limited
    name = factory.user("Viewer")["username"]
    for _ in range(3):
        assert _api(one.test_client(), name, WRONG, _address()).status_code == 401
    first = _api(two.test_client(), name, PASSWORD, _address())
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"

    time.sleep(1.1)
    # One more wrong password once it expired: the next lockout is twice as long.
    assert _api(one.test_client(), name, WRONG, _address()).status_code == 401
    second = _api(two.test_client(), name, PASSWORD, _address())
    assert second.status_code == 429 and second.headers["Retry-After"] == "2"

    time.sleep(2.1)
    # The right password works again, and clears the count.
    assert _api(one.test_client(), name, PASSWORD, _address()).status_code == 200
    assert _api(one.test_client(), name, WRONG, _address()).status_code == 401
    assert _api(one.test_client(), name, PASSWORD, _address()).status_code == 200


def test_lockout_is_capped(limited):
    from app.security.login_limits import lockout_seconds

    with limited[0].app_context():
        assert [lockout_seconds(n, 3) for n in (3, 4, 5, 6, 50, 10_000)] == [1, 2, 4, 4, 4, 4]


def test_address_lockout_spans_accounts(limited, factory):
    one, two = limited
    address = _address()
    for _ in range(4):  # four accounts, one failure each: no account is locked
        victim = factory.user("Viewer")["username"]
        assert _api(one.test_client(), victim, WRONG, address).status_code == 401
    user = factory.user("Viewer")["username"]
    refused = _form(two.test_client(), user, PASSWORD, address)
    assert refused.status_code == 429
    assert "Too many failed logins from this address" in refused.get_data(as_text=True)
    # The same account from elsewhere is fine.
    assert _api(one.test_client(), user, PASSWORD, _address()).status_code == 200


def test_unknown_usernames_are_counted_like_known_ones(limited):
    one, _ = limited
    nobody = unique("nobody")
    for _ in range(3):
        assert _api(one.test_client(), nobody, WRONG, _address()).status_code == 401
    assert _api(one.test_client(), nobody, WRONG, _address()).status_code == 429
