"""Connections (CONNECTORS.md): team-scoped CRUD, secret fields encrypted and never
shown, config validated by the type's model, a real "Test connection", roles and other
teams, and the key rotation re-encrypting them."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from capability.connections.models import Connection
from tests.support.app import Factory, api_token, auth
from tests.support.connections import SECRET, own_postgres, postgres_body

__all__ = ["own_postgres"]  # a fixture, used by name

BASE = "/api/v1/connections/"


def _create(client: FlaskClient, op: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(BASE, headers=op["h"], json=body)
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json()["result"])


def test_secret_fields_are_encrypted_and_never_shown(app: Flask, client: FlaskClient,
                                                     op: dict[str, Any]) -> None:
    made = _create(client, op, postgres_body(op))
    assert made["secret"] == {"password": "***"}
    assert made["config"]["host"] == "127.0.0.1" and made["type"] == "postgres"
    for r in (client.get(BASE, headers=op["h"]),
              client.get(f"{BASE}{made['id']}", headers=op["h"])):
        assert r.status_code == 200 and SECRET not in r.get_data(as_text=True)
    with app.app_context():
        row = db.session.get(Connection, made["id"])
        assert row is not None and row.ciphertext and SECRET not in row.ciphertext
        events = db.session.execute(select(AuditEvent).where(
            AuditEvent.target_id == made["id"])).scalars().all()
        assert events and all(SECRET not in str(e.after) + str(e.before) for e in events)
        db.session.remove()
    # A change of config keeps the password it was not sent again.
    r = client.put(f"{BASE}{made['id']}", headers=op["h"], json={
        "config": {**made["config"], "database": "test"}})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["result"]["secret"] == {"password": "***"}


@pytest.mark.parametrize(("change", "path"), [
    ({"type": "oracle"}, "type"),
    ({"config": {"port": 5432, "database": "d", "username": "u"}}, "config.host"),
    ({"config": {"host": "h", "database": "d", "username": "u", "colour": 1}}, "config.colour"),
    ({"config": {"host": "h", "database": "d", "username": "u", "port": 70000}}, "config.port"),
    ({"secret": {"passwd": SECRET}}, "secret.passwd"),
    ({"name": "Bad Name"}, "name"),
    ({"type": "redis", "config": {"url": "redis://u:in-the-url@h:6379/0"}}, "config.url"),
    ({"type": "amqp", "config": {"url": "http://broker/"}}, "config.url"),
])
def test_bad_input_names_the_field_and_saves_nothing(client: FlaskClient, op: dict[str, Any],
                                                     change: dict[str, Any], path: str) -> None:
    r = client.post(BASE, headers=op["h"], json={**postgres_body(op), **change})
    assert r.status_code == 422, r.get_json()
    assert path in [e["path"] for e in r.get_json()["errors"]], r.get_json()
    assert SECRET not in r.get_data(as_text=True)
    assert client.get(BASE, headers=op["h"]).get_json()["count"] == 0


def test_a_name_is_unique_in_its_team(client: FlaskClient, op: dict[str, Any]) -> None:
    _create(client, op, postgres_body(op))
    r = client.post(BASE, headers=op["h"], json=postgres_body(op))
    assert r.status_code == 409


def test_roles_and_teams(client: FlaskClient, factory: Factory, op: dict[str, Any]) -> None:
    """Author manages and tests; Operator and Viewer read; another team: 404."""
    made = _create(client, op, postgres_body(op))
    url = f"{BASE}{made['id']}"
    team = op["team"]
    readers = [auth(api_token(client, factory.user(role, teams=[team])["username"]))
               for role in ("Operator", "Viewer")]
    stranger = auth(api_token(client, factory.user("Author", teams=[factory.team()])
                              ["username"]))
    for who in readers:
        got = client.get(url, headers=who)
        assert got.status_code == 200 and got.get_json()["result"]["secret"] == {
            "password": "***"}
        assert client.get(BASE, headers=who).get_json()["count"] == 1
        assert client.get(f"{BASE}types", headers=who).status_code == 200
        assert client.put(url, headers=who, json={"config": made["config"]}).status_code == 403
        assert client.post(f"{url}/test", headers=who).status_code == 403
        assert client.delete(url, headers=who).status_code == 403
        assert client.post(BASE, headers=who, json=postgres_body(op, "other")).status_code \
            == 403
    for method, path in (("get", url), ("put", url), ("delete", url), ("post", f"{url}/test")):
        r = getattr(client, method)(path, headers=stranger, json={"config": made["config"]})
        assert r.status_code == 404, (method, path, r.status_code)
    assert client.get(BASE, headers=stranger).get_json()["count"] == 0
    r = client.post(BASE, headers=stranger, json=postgres_body(op, "theirs"))
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "team"
    assert client.delete(url, headers=op["h"]).status_code == 200
    assert client.get(url, headers=op["h"]).status_code == 404


def test_types_carry_the_json_schema_of_their_fields(client: FlaskClient,
                                                     op: dict[str, Any]) -> None:
    types = {t["type"]: t for t in client.get(f"{BASE}types", headers=op["h"])
             .get_json()["result"]}
    assert {"postgres", "mysql", "sqlite"} <= set(types)
    assert "host" in types["postgres"]["config"]["properties"]
    assert "password" in types["postgres"]["secret"]["properties"]
    assert types["sqlite"]["secret"] is None


def test_test_connection_is_a_real_round_trip(client: FlaskClient, op: dict[str, Any],
                                              own_postgres: None) -> None:
    good = _create(client, op, postgres_body(op))
    r = client.post(f"{BASE}{good['id']}/test", headers=op["h"])
    assert r.status_code == 200, r.get_json()
    got = r.get_json()
    assert got["ok"] is True and "PostgreSQL" in got["message"] and got["took_ms"] >= 0
    missing = _create(client, op, postgres_body(op, "nowhere", database="no_such_db_x"))
    got = client.post(f"{BASE}{missing['id']}/test", headers=op["h"]).get_json()
    assert got["ok"] is False and 'database "no_such_db_x" does not exist' in got["message"]
    metadata = _create(client, op, {**postgres_body(op, "metadata"), "config": {
        "host": "169.254.169.254", "database": "x", "username": "u"}})
    got = client.post(f"{BASE}{metadata['id']}/test", headers=op["h"]).get_json()
    assert got["ok"] is False
    assert "egress to 169.254.169.254:5432 denied by policy" in got["message"]


def test_the_rotation_command_re_encrypts_connections(app: Flask, client: FlaskClient,
                                                      op: dict[str, Any]) -> None:
    from cryptography.fernet import Fernet

    from capability.connections import resolve
    from capability.engine.settings import EngineSettings

    made = _create(client, op, postgres_body(op))
    with app.app_context():
        row = db.session.get(Connection, made["id"])
        assert row is not None
        before = row.ciphertext
        db.session.remove()
    old = app.config.get("SECRETS_KEY")
    # A new key first, the derived one (SECRET_KEY's) still readable second.
    from capability.secrets.vault import derived_key

    new = Fernet.generate_key().decode()
    app.config["SECRETS_KEY"] = f"{new},{derived_key(app.config['SECRET_KEY']).decode()}"
    try:
        result = app.test_cli_runner().invoke(args=["secrets", "rotate"])
        assert result.exit_code == 0, result.output
        assert "connection(s)" in result.output
        with app.app_context():
            row = db.session.get(Connection, made["id"])
            assert row is not None and row.ciphertext != before
            app.config["SECRETS_KEY"] = new  # the old key dropped: still readable
            fields = resolve.secret_fields(row.ciphertext,
                                           EngineSettings.from_config(app.config))
            assert fields == {"password": SECRET}
            db.session.remove()
    finally:
        # Everything back under the key the rest of the suite reads with.
        derived = derived_key(app.config["SECRET_KEY"]).decode()
        app.config["SECRETS_KEY"] = f"{derived},{new}"
        back = app.test_cli_runner().invoke(args=["secrets", "rotate"])
        app.config["SECRETS_KEY"] = old
        assert back.exit_code == 0, back.output
