"""``/api/v1/secrets/``: CRUD by Admins and by the Authors of a team (Operators and
Viewers read names; another team's secret is 404), errors with paths, the value encrypted at rest
and never in a response or an audit event, and key rotation (``secrets rotate``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from app.audit.models import AuditEvent
from app.extensions import db
from app.security.actor import SYSTEM
from capability.models import Secret
from capability.secrets import service as secrets
from capability.secrets import vault
from tests.support.app import api_token, auth, unique
from tests.support.engine import child_env

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"id", "team", "name", "created_by", "updated_by", "created_at", "updated_at"}
MEMBERS = ["Author", "Operator", "Viewer", "Auditor"]


@pytest.fixture(scope="module")
def world(app) -> dict[str, Any]:
    from tests.support.app import Factory

    f = Factory(app)
    foreign_tenant = f.tenant()
    own = f.team()
    foreign = f.team(tenant=foreign_tenant.name)
    admin = f.user("Admin")
    users = {role: f.user(role, teams=[own]) for role in MEMBERS}
    client = app.test_client()
    tokens = {role: api_token(client, users[role]["username"]) for role in MEMBERS}
    tokens["Admin"] = api_token(client, admin["username"])
    return {"own": own, "foreign": foreign, "admin": admin, "users": users, "tokens": tokens}


def admin_h(world: dict[str, Any]) -> dict[str, str]:
    return auth(world["tokens"]["Admin"])


def qualified(team: dict[str, Any]) -> str:
    return f"{team['tenant']}/{team['name']}"


def create(client, world, team: dict[str, Any], value: str, name: str | None = None) -> Any:
    body = {"team": qualified(team), "name": name or unique("s").replace("-", "_"),
            "value": value}
    r = client.post("/api/v1/secrets/", json=body, headers=admin_h(world))
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def secret_count(app) -> int:
    with app.app_context():
        count = db.session.execute(select(func.count()).select_from(Secret)).scalar_one()
        db.session.remove()
        return int(count)


def ciphertext(app, secret_id: str) -> str:
    with app.app_context():
        token = db.session.execute(
            text("SELECT ciphertext FROM apg_secret WHERE id = :id"), {"id": secret_id}
        ).scalar_one()
        db.session.remove()
        return str(token)


def events(app, secret_id: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.execute(
            select(AuditEvent).where(AuditEvent.target_type == "secret",
                                     AuditEvent.target_id == secret_id)
            .order_by(AuditEvent.seq)
        ).scalars())
        db.session.expunge_all()
        return rows


# -- Admin CRUD --------------------------------------------------------------------------

def test_admin_creates_reads_lists_updates_and_deletes_a_secret(app, client, world):
    name = unique("crud").replace("-", "_")
    created = create(client, world, world["own"], "first-value-1", name)
    sid = created["id"]
    assert set(created["result"]) == FIELDS
    assert created["result"]["team"] == world["own"]["name"]
    assert created["result"]["name"] == name
    assert created["result"]["created_by"] == world["admin"]["username"]

    r = client.get(f"/api/v1/secrets/{sid}", headers=admin_h(world))
    assert r.status_code == 200 and r.get_json()["result"] == created["result"]

    q = f"(filters:!((col:name,opr:eq,value:{name})))"
    r = client.get("/api/v1/secrets/", query_string={"q": q}, headers=admin_h(world))
    listed = r.get_json()
    assert r.status_code == 200 and listed["count"] == 1 and listed["ids"] == [sid]
    item = listed["result"][0]
    assert set(item) == FIELDS and (item["team"], item["name"]) == (world["own"]["name"], name)

    r = client.put(f"/api/v1/secrets/{sid}", json={"value": "second-value-2"},
                   headers=admin_h(world))
    assert r.status_code == 200, r.get_json()
    assert set(r.get_json()["result"]) == FIELDS
    with app.app_context():
        assert decrypt(app.config, ciphertext(app, sid)) == "second-value-2"

    r = client.delete(f"/api/v1/secrets/{sid}", headers=admin_h(world))
    assert r.status_code == 200 and r.get_json()["message"]
    for method in ("GET", "PUT", "DELETE"):
        r = client.open(f"/api/v1/secrets/{sid}", method=method, json={"value": "x"},
                        headers=admin_h(world))
        assert r.status_code == 404 and r.get_json() == {"message": "Not found"}, method


def test_list_pages_and_orders_with_rison(client, world):
    for i in range(3):
        create(client, world, world["own"], f"v{i}", f"page_{i}_{unique('p')[-8:]}")
    q = "(order_column:name,order_direction:desc,page:0,page_size:2)"
    r = client.get("/api/v1/secrets/", query_string={"q": q}, headers=admin_h(world))
    body = r.get_json()
    assert r.status_code == 200 and len(body["result"]) == 2 and body["count"] >= 3
    names = [s["name"] for s in body["result"]]
    assert names == sorted(names, reverse=True)
    # The ciphertext cannot be selected, ordered by or filtered on.
    r = client.get("/api/v1/secrets/", query_string={"q": "(columns:!(name,ciphertext))"},
                   headers=admin_h(world))
    assert all(set(s) <= FIELDS for s in r.get_json()["result"])
    r = client.get("/api/v1/secrets/", query_string={"q": "(order_column:ciphertext)"},
                   headers=admin_h(world))
    assert r.status_code == 400
    r = client.get("/api/v1/secrets/", headers=admin_h(world), query_string={
        "q": "(filters:!((col:ciphertext,opr:ct,value:g)))"})
    assert r.status_code == 400


def test_admin_sees_secrets_of_every_team_and_tenant(app, client, world):
    own = create(client, world, world["own"], "own-value")
    foreign = create(client, world, world["foreign"], "foreign-value")
    r = client.get("/api/v1/secrets/", query_string={"q": "(page_size:100)"},
                   headers=admin_h(world))
    ids = set(r.get_json()["ids"])
    count = r.get_json()["count"]
    while len(ids) < count:  # other tests' secrets: read every page
        page = len(ids) // 100
        r = client.get("/api/v1/secrets/", query_string={"q": f"(page:{page},page_size:100)"},
                       headers=admin_h(world))
        ids |= set(r.get_json()["ids"])
    assert {own["id"], foreign["id"]} <= ids
    assert foreign["result"]["team"] == world["foreign"]["name"]
    with app.app_context():
        row = db.session.get(Secret, foreign["id"])
        assert row is not None and row.team.tenant.name == world["foreign"]["tenant"]
        db.session.remove()


def test_a_team_name_in_two_tenants_needs_the_tenant(app, client, world, factory):
    tenant = factory.tenant()
    twin = factory.team(name=world["own"]["name"], tenant=tenant.name)
    before = secret_count(app)
    r = client.post("/api/v1/secrets/", headers=admin_h(world), json={
        "team": twin["name"], "name": "twin", "value": "v"})
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{"path": "team",
                                       "message": "ambiguous: write it as tenant/team"}]
    assert secret_count(app) == before
    created = create(client, world, twin, "twin-value", "twin")
    with app.app_context():
        row = db.session.get(Secret, created["id"])
        assert row is not None and row.team_id == twin["id"]
        db.session.remove()


# -- refused requests ----------------------------------------------------------------------

def test_a_duplicate_name_in_a_team_is_409_and_changes_nothing(app, client, world):
    name = unique("dup").replace("-", "_")
    create(client, world, world["own"], "one", name)
    before = secret_count(app)
    r = client.post("/api/v1/secrets/", headers=admin_h(world), json={
        "team": qualified(world["own"]), "name": name, "value": "two"})
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["errors"] == [{"path": "name", "message": "already exists in this team"}]
    assert secret_count(app) == before
    # The same name in another team is another secret.
    create(client, world, world["foreign"], "three", name)


VALUE = "never-echoed-9d1f"


@pytest.mark.parametrize(("body", "paths"), [
    ({"team": "@own", "name": "Bad-Name", "value": VALUE}, {"name"}),
    ({"team": "@own", "name": "1st", "value": VALUE}, {"name"}),
    ({"team": "@own", "name": "x" * 64, "value": VALUE}, {"name"}),
    ({"team": "@own", "name": "ok_name", "value": ""}, {"value"}),
    ({"team": "@own", "name": "ok_name", "value": 12}, {"value"}),
    ({"team": "@own", "name": "ok_name", "value": "x" * (secrets.MAX_VALUE + 1)}, {"value"}),
    ({"team": "no-such-team", "name": "ok_name", "value": VALUE}, {"team"}),
    ({"team": "@own", "name": "ok_name", "value": VALUE, "colour": "red"}, {"colour"}),
    ({"name": "ok_name"}, {"team", "value"}),
    (["not", "an", "object"], {"$"}),
])
def test_invalid_bodies_are_422_with_paths_and_change_nothing(app, client, world, body, paths):
    if isinstance(body, dict) and body.get("team") == "@own":
        body = {**body, "team": qualified(world["own"])}
    before = secret_count(app)
    r = client.post("/api/v1/secrets/", json=body, headers=admin_h(world))
    assert r.status_code == 422, r.get_json()
    payload = r.get_json()
    assert payload["message"] and {e["path"] for e in payload["errors"]} == paths
    assert secret_count(app) == before
    assert VALUE not in r.get_data(as_text=True)


def test_a_bad_name_says_what_a_name_may_be(client, world):
    r = client.post("/api/v1/secrets/", headers=admin_h(world), json={
        "team": qualified(world["own"]), "name": "API-Token", "value": "v"})
    assert r.get_json()["errors"] == [{
        "path": "name", "message": "must start with a lower-case letter, then lower-case "
        "letters, digits or _ (at most 63 characters), as templates name it: secrets.<name>"}]


def test_invalid_updates_are_422_and_keep_the_value(app, client, world):
    sid = create(client, world, world["own"], "kept-value")["id"]
    for body, paths in (({}, {"value"}), ({"value": ""}, {"value"}),
                        ({"value": "v", "name": "renamed"}, {"name"}),
                        ({"value": "v", "team": "x"}, {"team"})):
        r = client.put(f"/api/v1/secrets/{sid}", json=body, headers=admin_h(world))
        assert r.status_code == 422, (body, r.get_json())
        assert {e["path"] for e in r.get_json()["errors"]} == paths
    r = client.put(f"/api/v1/secrets/{sid}", data="{not json", headers=admin_h(world),
                   content_type="application/json")
    assert r.status_code == 400
    with app.app_context():
        assert decrypt(app.config, ciphertext(app, sid)) == "kept-value"


def test_refused_changes_are_audited(app, client, world):
    name = unique("audited").replace("-", "_")
    create(client, world, world["own"], "v", name)
    r = client.post("/api/v1/secrets/", headers=admin_h(world), json={
        "team": qualified(world["own"]), "name": name, "value": "refused-value"})
    assert r.status_code == 409
    r = client.post("/api/v1/secrets/", headers=admin_h(world), json={
        "team": "nope", "name": "ok", "value": "refused-value"})
    assert r.status_code == 422
    with app.app_context():
        rows = list(db.session.execute(
            select(AuditEvent).where(AuditEvent.actor == world["admin"]["username"],
                                     AuditEvent.target_type == "secret",
                                     AuditEvent.outcome == "error")
            .order_by(AuditEvent.seq.desc()).limit(2)
        ).scalars())
        got = [(e.action, e.after["errors"][0]["path"]) for e in rows]
        text_ = json.dumps([e.after for e in rows])
        db.session.remove()
    assert got == [("create", "team"), ("create", "name")]
    assert "refused-value" not in text_


# -- roles and teams -------------------------------------------------------------------------

ENDPOINTS = [
    ("list", "GET", "/api/v1/secrets/", None),
    ("info", "GET", "/api/v1/secrets/_info", None),
    ("get", "GET", "/api/v1/secrets/{id}", None),
    ("post", "POST", "/api/v1/secrets/", {"team": "@team", "name": "@name", "value": "v"}),
    ("put", "PUT", "/api/v1/secrets/{id}", {"value": "changed-by-a-member"}),
    ("delete", "DELETE", "/api/v1/secrets/{id}", None),
]
WHOSE = ["own team", "other team", "other tenant"]
READERS = {"Author", "Operator", "Viewer"}  # hold can_read on Secrets
WRITES = {"post", "put", "delete"}


def expected(role: str, endpoint: str, whose: str) -> int:
    """AGENTS.md, "Team secrets": Authors manage their teams' secrets, Operators and
    Viewers read the names, another team's secret is not found; the Auditor holds no
    permission on Secrets."""
    if role not in READERS or (endpoint in WRITES and role != "Author"):
        return 403  # no permission on Secrets, or read only: refused before any row
    if endpoint in ("list", "info"):
        return 200
    if whose != "own team":
        # Another team is unknown: a body naming it is 422 (unknown team), an id 404.
        return 422 if endpoint == "post" else 404
    return {"post": 201}.get(endpoint, 200)


@pytest.fixture(scope="module")
def other_team(app, world) -> dict[str, Any]:
    """A team of the members' own tenant that they are not members of."""
    from tests.support.app import Factory

    return Factory(app).team(tenant=world["own"]["tenant"])


def listed_ids(client, token: str) -> set[str]:
    r = client.get("/api/v1/secrets/", query_string={"q": "(page_size:100)"},
                   headers=auth(token))
    assert r.status_code == 200
    body = r.get_json()
    ids, page = set(body["ids"]), 0
    while len(ids) < body["count"]:
        page += 1
        r = client.get("/api/v1/secrets/", query_string={"q": f"(page:{page},page_size:100)"},
                       headers=auth(token))
        ids |= set(r.get_json()["ids"])
    return ids


@pytest.mark.parametrize("role", MEMBERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
@pytest.mark.parametrize("whose", WHOSE)
def test_each_role_on_each_endpoint_of_each_team(app, client, world, other_team, role,
                                                 endpoint, whose):
    which, method, path, body = endpoint
    team = {"own team": world["own"], "other team": other_team,
            "other tenant": world["foreign"]}[whose]
    secret = create(client, world, team, "members-never-see-it")
    secret_id = secret["id"]
    new_name = unique("mine").replace("-", "_")
    if body and body.get("team") == "@team":
        body = {**body, "team": qualified(team), "name": new_name}
    before = secret_count(app)
    user = world["users"][role]
    r = client.open(path.format(id=secret_id), method=method, json=body,
                    headers=auth(world["tokens"][role]))
    want = expected(role, which, whose)
    assert r.status_code == want, (role, which, whose, r.get_data(as_text=True))
    text_ = r.get_data(as_text=True)
    assert "members-never-see-it" not in text_ and "gAAAA" not in text_
    if want == 404:
        assert r.get_json() == {"message": "Not found"}
    # What changed: only an Author's writes to their own team.
    changed = {("post", 201): 1, ("delete", 200): -1}.get((which, want), 0)
    assert secret_count(app) == before + changed
    with app.app_context():
        value = None if (which, want) == ("delete", 200) else decrypt(
            app.config, ciphertext(app, secret_id))
    if (which, want) == ("put", 200):
        assert value == "changed-by-a-member"
    elif value is not None:
        assert value == "members-never-see-it"
    if which == "list" and want == 200:
        ids = listed_ids(client, world["tokens"][role])
        assert (secret_id in ids) == (whose == "own team")
    if which in ("get", "put") and want == 200:
        assert set(r.get_json()["result"]) == FIELDS
        assert r.get_json()["result"]["name"] == secret["result"]["name"]
    with app.app_context():
        last = db.session.execute(
            select(AuditEvent).where(AuditEvent.actor == user["username"])
            .order_by(AuditEvent.seq.desc())
        ).scalars().first()
        db.session.remove()
    if want == 403:
        assert last is not None and (last.action, last.outcome) == ("access", "denied")
    elif which in WRITES:
        assert last is not None and last.target_type == "secret"
        outcome = "success" if want in (200, 201) else "error"
        assert last.outcome == outcome, (last.action, last.outcome)
        if want in (200, 201):
            assert last.team == team["name"]
            assert "members-never-see-it" not in json.dumps([last.before, last.after])


def test_an_author_manages_the_secrets_of_their_teams_only(app, client, world, other_team):
    """Admin sees every team's secrets; an Author only their teams'; a secret created by
    an Author is theirs in the audit trail and reads back as names only."""
    token = world["tokens"]["Author"]
    name = unique("by_author").replace("-", "_")
    r = client.post("/api/v1/secrets/", headers=auth(token), json={
        "team": qualified(world["own"]), "name": name, "value": "authored-value"})
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["id"]
    assert r.get_json()["result"]["created_by"] == world["users"]["Author"]["username"]
    foreign = create(client, world, other_team, "not-the-authors")["id"]
    assert sid in listed_ids(client, token) and foreign not in listed_ids(client, token)
    assert {sid, foreign} <= listed_ids(client, world["tokens"]["Admin"])
    for role in ("Operator", "Viewer"):
        r = client.get(f"/api/v1/secrets/{sid}", headers=auth(world["tokens"][role]))
        assert r.status_code == 200 and r.get_json()["result"]["name"] == name
        assert "authored-value" not in r.get_data(as_text=True)
    rows = events(app, sid)
    assert [(e.action, e.outcome, e.actor) for e in rows] == [
        ("create", "success", world["users"]["Author"]["username"])]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_anonymous_gets_401(app, client, world, endpoint):
    _, method, path, body = endpoint
    own_secret = create(client, world, world["own"], "anonymous-never-sees-it")["id"]
    r = client.open(path.format(id=own_secret), method=method, json=body)
    assert r.status_code == 401
    assert secret_count(app) >= 1


# -- the value: encrypted at rest, never shown -------------------------------------------------

def test_the_value_is_encrypted_at_rest_and_in_no_response(app, client, world):
    value = "pw-" + unique("clear")
    created = create(client, world, world["own"], value)
    sid = created["id"]
    stored = ciphertext(app, sid)
    assert value not in stored and stored.startswith("gAAAA")  # a Fernet token
    with app.app_context():
        assert decrypt(app.config, stored) == value
    bodies = [json.dumps(created)]
    for path in (f"/api/v1/secrets/{sid}", "/api/v1/secrets/?q=(page_size:100)",
                 "/api/v1/secrets/_info", "/api/v1/_openapi"):
        r = client.get(path, headers=admin_h(world))
        assert r.status_code == 200, path
        bodies.append(r.get_data(as_text=True))
    new_value = "pw2-" + unique("clear")
    r = client.put(f"/api/v1/secrets/{sid}", json={"value": new_value}, headers=admin_h(world))
    bodies.append(r.get_data(as_text=True))
    new_stored = ciphertext(app, sid)
    for body in bodies:
        for secret in (value, new_value, stored, new_stored):
            assert secret not in body
    # Nor the ciphertext column, in any schema of the OpenAPI document or _info.
    assert "ciphertext" not in bodies[3] and "ciphertext" not in bodies[4]
    spec = json.loads(bodies[4])
    assert {"/api/v1/secrets/", "/api/v1/secrets/{pk}", "/api/v1/secrets/_info"} <= set(
        spec["paths"])
    bodies_in_spec = spec["components"]["schemas"]
    assert set(bodies_in_spec["SecretApi.post"]["properties"]) == {"team", "name", "value"}
    assert set(bodies_in_spec["SecretApi.put"]["properties"]) == {"value"}
    post = spec["paths"]["/api/v1/secrets/"]["post"]["requestBody"]["content"]
    assert post["application/json"]["schema"] == {"$ref": "#/components/schemas/SecretApi.post"}
    info = json.loads(bodies[3])
    assert [c["name"] for c in info["add_columns"]] == ["team", "name", "value"]
    assert [c["name"] for c in info["edit_columns"]] == ["value"]


def test_audit_events_never_hold_the_value_or_the_ciphertext(app, client, world):
    value = "audit-" + unique("clear")
    sid = create(client, world, world["own"], value)["id"]
    first = ciphertext(app, sid)
    new_value = "audit2-" + unique("clear")
    client.put(f"/api/v1/secrets/{sid}", json={"value": new_value}, headers=admin_h(world))
    second = ciphertext(app, sid)
    client.delete(f"/api/v1/secrets/{sid}", headers=admin_h(world))

    rows = events(app, sid)
    assert [(e.action, e.outcome) for e in rows] == [
        ("create", "success"), ("update", "success"), ("delete", "success")]
    for e in rows:
        assert e.team == world["own"]["name"] and e.tenant == world["own"]["tenant"]
        assert e.actor == world["admin"]["username"]
    assert rows[0].after["ciphertext"] == "***" and rows[0].after["name"]
    assert rows[1].before["ciphertext"] == "***" and rows[1].after["ciphertext"] == "***"
    assert rows[2].before["ciphertext"] == "***"

    r = client.get("/api/v1/audit/", query_string={"target": f"secret:{sid}"},
                   headers=admin_h(world))
    assert r.status_code == 200 and r.get_json()["count"] == 3
    with app.app_context():
        raw = [json.dumps(list(row), default=str) for row in db.session.execute(
            text("SELECT * FROM apg_audit_event WHERE target_type = 'secret'")).all()]
        db.session.remove()
    for body in [r.get_data(as_text=True), *raw]:
        for secret in (value, new_value, first, second):
            assert secret not in body


# -- keys and rotation ----------------------------------------------------------------------

def decrypt(config, token: str) -> str:
    return vault.decrypt(config.get("SECRETS_KEY") or "", config["SECRET_KEY"], token)


def values_for(session, config, team_id: str, names: list[str]) -> dict[str, str]:
    return vault.values_for(session, config.get("SECRETS_KEY") or "", config["SECRET_KEY"],
                            team_id, names)


def keyed(app, keys: str) -> dict[str, str]:
    return {"SECRET_KEY": app.config["SECRET_KEY"], "SECRETS_KEY": keys}


def test_rotation_moves_every_secret_to_the_first_key(app, client, world):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    # Every other secret (other tests') is under the key derived from SECRET_KEY.
    derived = vault.derived_key(app.config["SECRET_KEY"]).decode()
    team_id = world["own"]["id"]
    name = unique("rot").replace("-", "_")
    wanted = {name: "rotated-value"}
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, keyed(app, old), secrets.SecretIn(
            team=qualified(world["own"]), name=name, value="rotated-value"))
        try:
            both = keyed(app, f"{new},{old},{derived}")
            assert values_for(db.session, both, team_id, [name]) == wanted
            with pytest.raises(vault.SecretsKeyError):
                values_for(db.session, keyed(app, new), team_id, [name])
            count = secrets.rotate(db.session, both)
            assert count == secret_count(app)
            assert values_for(db.session, keyed(app, new), team_id, [name]) == wanted
            with pytest.raises(vault.SecretsKeyError):
                values_for(db.session, keyed(app, old), team_id, [name])
        finally:  # back under the app's own key, for the tests that follow
            secrets.rotate(db.session, keyed(app, f"{derived},{new},{old}"))
        assert values_for(db.session, app.config, team_id, [name]) == wanted
        rotations = db.session.execute(
            select(func.count()).select_from(AuditEvent).where(
                AuditEvent.target_type == "secret", AuditEvent.action == "rotate")
        ).scalar_one()
        db.session.remove()
    assert rotations >= 2 * count


def test_the_rotate_command_re_encrypts_and_reports(app, world):
    sid = create(app.test_client(), world, world["own"], "cli-value")["id"]
    before = ciphertext(app, sid)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert f"re-encrypted {secret_count(app)} secret(s)" in result.output
    after = ciphertext(app, sid)
    assert after != before
    with app.app_context():
        assert decrypt(app.config, after) == "cli-value"


def test_the_rotate_command_exits_1_when_a_key_is_missing(app, world):
    sid = create(app.test_client(), world, world["own"], "kept-under-its-key")["id"]
    before = ciphertext(app, sid)
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "secrets", "rotate"], cwd=ROOT,
        env=child_env(app, SECRETS_KEY=Fernet.generate_key().decode()),
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "does not decrypt with any key of SECRETS_KEY" in done.stderr
    assert "nothing was re-encrypted" in done.stderr
    assert ciphertext(app, sid) == before

    done = subprocess.run(
        [sys.executable, "-m", "app", "secrets", "rotate"], cwd=ROOT,
        env=child_env(app, SECRETS_KEY="not-a-fernet-key"), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 1 and "SECRETS_KEY must be comma-separated Fernet keys" in (
        done.stderr), (done.stdout, done.stderr)
