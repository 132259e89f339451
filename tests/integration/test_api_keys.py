"""API keys (AGENTS.md): made in person and shown once, stored as a keyed hash, narrowed
by scopes, teams and the user's roles now, refused (401) when malformed, unknown,
revoked, expired or used from elsewhere, rate-limited per key across processes, and
audited as the user ``via`` the key."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, text, update

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import ApiKey
from tests.support.app import Factory, api_token, auth, unique


def definition(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": [{"id": "t0", "type": "noop"}]}


@pytest.fixture(scope="module")
def world(app) -> dict[str, Any]:
    f = Factory(app)
    own, other = f.team(), f.team()
    users = {"Author": f.user("Author", teams=[own, other]),
             "Operator": f.user("Operator", teams=[own]),
             "Viewer": f.user("Viewer", teams=[own]),
             "Admin": f.user("Admin")}
    client = app.test_client()
    tokens = {role: api_token(client, u["username"]) for role, u in users.items()}
    return {"own": own, "other": other, "users": users, "tokens": tokens}


def make_key(client, world, role: str = "Author", **body: Any) -> dict[str, Any]:
    body.setdefault("name", unique("key"))
    body.setdefault("scopes", ["read", "run", "author"])
    r = client.post("/api/v1/api-keys/", json=body, headers=auth(world["tokens"][role]))
    assert r.status_code == 201, r.get_json()
    return r.get_json()["result"]


def new_workflow(client, headers, team: str) -> Any:
    return client.post("/api/v1/workflows/", headers=headers,
                       json={"team": team, "definition": definition(unique("wf"))})


def events(app, **where: Any) -> list[AuditEvent]:
    with app.app_context():
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, name) == value)
        rows = list(db.session.execute(stmt).scalars())
        db.session.expunge_all()
        db.session.remove()
        return rows


def test_a_key_is_shown_once_and_stored_as_a_hash(app, client, world):
    key = make_key(client, world, teams=[world["own"]["name"]], allowed_ips=["127.0.0.1"])
    token = key["key"]
    assert token.startswith(f"apk_{key['prefix']}_") and len(token) > 50
    assert key["scopes"] == ["read", "run", "author"] and key["teams"] == [world["own"]["name"]]
    listed = client.get("/api/v1/api-keys/", headers=auth(world["tokens"]["Author"])).get_json()
    mine = next(k for k in listed["result"] if k["id"] == key["id"])
    assert "key" not in mine and token not in str(listed)
    assert set(mine) >= {"name", "prefix", "scopes", "teams", "created_at", "expires_at",
                         "last_used_at", "last_used_ip", "revoked_at"}
    with app.app_context():
        row = db.session.execute(text("SELECT * FROM apg_api_key WHERE id = :id"),
                                 {"id": key["id"]}).mappings().one()
        db.session.remove()
    secret = token.split("_", 2)[2]
    assert all(secret not in str(value) for value in row.values())
    created = events(app, action="create", target_type="api_key", target_id=key["id"])
    assert len(created) == 1 and token not in str(created[0].after)
    assert secret not in str([e.after for e in events(app, target_type="api_key")])


def test_a_key_acts_as_its_user_with_rate_headers_and_is_audited_via_the_key(
        app, client, world):
    key = make_key(client, world)
    h = auth(key["key"])
    r = client.get("/api/v1/workflows/", headers=h)
    assert r.status_code == 200
    assert r.headers["X-RateLimit-Limit"] == "600"
    assert int(r.headers["X-RateLimit-Remaining"]) <= 599
    assert int(r.headers["X-RateLimit-Reset"]) > dt.datetime.now(dt.UTC).timestamp()
    r = new_workflow(client, h, world["own"]["name"])
    assert r.status_code == 201, r.get_json()
    made = events(app, target_type="workflow", target_id=r.get_json()["id"])
    assert made and made[0].actor == world["users"]["Author"]["username"]
    assert made[0].via == f"api_key:{key['prefix']}"
    listed = client.get("/api/v1/api-keys/", headers=auth(world["tokens"]["Author"])).get_json()
    used = next(k for k in listed["result"] if k["id"] == key["id"])
    assert used["last_used_at"] and used["last_used_ip"] == "127.0.0.1"


def test_scopes_narrow_what_a_key_may_do(client, world):
    reader = auth(make_key(client, world, scopes=["read"])["key"])
    assert client.get("/api/v1/workflows/", headers=reader).status_code == 200
    assert new_workflow(client, reader, world["own"]["name"]).status_code == 403
    author = auth(make_key(client, world, scopes=["author"])["key"])
    made = new_workflow(client, author, world["own"]["name"])
    assert made.status_code == 201
    wid = made.get_json()["id"]
    # `author` alone neither reads nor runs.
    assert client.get(f"/api/v1/workflows/{wid}", headers=author).status_code == 403
    assert client.post(f"/api/v1/workflows/{wid}/runs", headers=author, json={}
                       ).status_code == 403
    assert client.post(f"/api/v1/workflows/{wid}/runs", headers=reader, json={}
                       ).status_code == 403
    runner = auth(make_key(client, world, scopes=["run"])["key"])
    assert client.post(f"/api/v1/workflows/{wid}/runs", headers=runner, json={}
                       ).status_code == 201


def test_a_key_sees_only_its_teams_and_only_the_users(client, world):
    h_user = auth(world["tokens"]["Author"])
    in_other = new_workflow(client, h_user, world["other"]["name"]).get_json()["id"]
    narrow = auth(make_key(client, world, teams=[world["own"]["name"]])["key"])
    assert client.get(f"/api/v1/workflows/{in_other}", headers=narrow).status_code == 404
    assert new_workflow(client, narrow, world["other"]["name"]).status_code in (403, 404, 422)
    wide = auth(make_key(client, world)["key"])
    assert client.get(f"/api/v1/workflows/{in_other}", headers=wide).status_code == 200
    # Teams the user does not belong to cannot be named; scopes the user's roles lack
    # cannot be asked for.
    foreign = Factory(client.application).team()
    r = client.post("/api/v1/api-keys/", headers=auth(world["tokens"]["Viewer"]),
                    json={"name": "k", "scopes": ["read"], "teams": [foreign["name"]]})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "teams.0"
    r = client.post("/api/v1/api-keys/", headers=auth(world["tokens"]["Viewer"]),
                    json={"name": "k", "scopes": ["read", "author"]})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "scopes.1"


def test_a_user_who_loses_a_role_loses_it_through_every_key(app, client):
    f = Factory(app)
    team = f.team()
    user = f.user("Author", teams=[team])
    token = api_token(client, user["username"])
    key = client.post("/api/v1/api-keys/", headers=auth(token),
                      json={"name": "k", "scopes": ["read", "author"]}).get_json()["result"]
    h = auth(key["key"])
    assert new_workflow(client, h, team["name"]).status_code == 201
    with app.app_context():
        sm = app.extensions["appbuilder"].sm
        row = sm.get_user_by_id(user["id"])
        row.roles = [sm.find_role("Viewer")]
        db.session.commit()
        db.session.remove()
    assert new_workflow(client, h, team["name"]).status_code == 403
    assert client.get("/api/v1/workflows/", headers=h).status_code == 200
    with app.app_context():
        sm = app.extensions["appbuilder"].sm
        sm.get_user_by_id(user["id"]).active = False
        db.session.commit()
        db.session.remove()
    r = client.get("/api/v1/workflows/", headers=h)
    assert r.status_code == 401 and "inactive" in r.get_json()["message"]


def test_refusals_are_401_and_do_not_reveal_which_keys_exist(app, client, world):
    key = make_key(client, world)
    token = key["key"]
    wrong_secret = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    unknown = "apk_" + "z" * 10 + "_" + "x" * 43
    answers = {}
    for name, candidate in {"malformed": "apk_nonsense", "unknown": unknown,
                            "wrong secret": wrong_secret}.items():
        r = client.get("/api/v1/workflows/", headers=auth(candidate))
        assert r.status_code == 401, name
        answers[name] = r.get_json()["message"]
    # A wrong secret for a real prefix reads exactly as a prefix that does not exist.
    assert answers["unknown"] == answers["wrong secret"]
    assert key["prefix"] not in str(answers)
    denied = events(app, action="api_key_use")
    assert any(e.outcome == "denied" for e in denied)


def test_revoked_expired_and_wrong_address_keys_are_refused(app, client, world):
    revoked = make_key(client, world)
    h = auth(revoked["key"])
    assert client.get("/api/v1/workflows/", headers=h).status_code == 200
    r = client.delete(f"/api/v1/api-keys/{revoked['id']}", headers=auth(world["tokens"]["Author"]))
    assert r.status_code == 200 and r.get_json()["result"]["revoked_at"]
    r = client.get("/api/v1/workflows/", headers=h)
    assert r.status_code == 401 and "revoked" in r.get_json()["message"]
    assert events(app, action="revoke", target_id=revoked["id"])

    expired = make_key(client, world)
    with app.app_context():
        db.session.execute(update(ApiKey).where(ApiKey.id == expired["id"]).values(
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()
    r = client.get("/api/v1/workflows/", headers=auth(expired["key"]))
    assert r.status_code == 401 and "expired" in r.get_json()["message"]

    elsewhere = make_key(client, world, allowed_ips=["10.0.0.0/8"])
    r = client.get("/api/v1/workflows/", headers=auth(elsewhere["key"]))
    assert r.status_code == 401 and "address" in r.get_json()["message"]
    r = client.get("/api/v1/workflows/", headers=auth(elsewhere["key"]),
                   environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 200


def test_only_the_owner_or_an_admin_revokes_and_keys_never_manage_keys(client, world):
    key = make_key(client, world)
    r = client.delete(f"/api/v1/api-keys/{key['id']}", headers=auth(world["tokens"]["Viewer"]))
    assert r.status_code == 404
    listed = client.get("/api/v1/api-keys/", headers=auth(world["tokens"]["Viewer"])).get_json()
    assert key["id"] not in str(listed)
    admin_list = client.get("/api/v1/api-keys/", headers=auth(world["tokens"]["Admin"])).get_json()
    assert key["id"] in str(admin_list)
    h = auth(key["key"])
    assert client.get("/api/v1/api-keys/", headers=h).status_code == 403
    assert client.post("/api/v1/api-keys/", headers=h,
                       json={"name": "k2", "scopes": ["read"]}).status_code == 403
    r = client.delete(f"/api/v1/api-keys/{key['id']}", headers=auth(world["tokens"]["Admin"]))
    assert r.status_code == 200


def test_admin_only_endpoints_never_accept_keys(app, client, world):
    key = make_key(client, world, role="Admin")
    h = auth(key["key"])
    for path in ("/api/v1/workers/", "/api/v1/security/users/", "/api/v1/audit/",
                 "/api/v1/tenants/"):
        assert client.get(path, headers=h).status_code == 403, path
    # An Admin's key is still an Author of every team.
    assert client.get("/api/v1/workflows/", headers=h).status_code == 200
    denied = events(app, action="access", via=f"api_key:{key['prefix']}")
    assert len(denied) >= 4 and all(e.outcome == "denied" for e in denied)


def test_the_rate_limit_is_per_key_with_retry_after(app, client, world):
    app.config["API_KEY_RATE_LIMIT"] = "3 per minute"
    try:
        first, second = make_key(client, world), make_key(client, world)
        statuses = [client.get("/api/v1/workflows/", headers=auth(first["key"]))
                    for _ in range(4)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429]
        over = statuses[-1]
        assert over.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        assert client.get("/api/v1/workflows/", headers=auth(second["key"])).status_code == 200
    finally:
        app.config["API_KEY_RATE_LIMIT"] = "600 per minute"


def test_bad_key_bodies_are_422_with_paths(client, world):
    h = auth(world["tokens"]["Author"])
    cases = {
        "scopes": {"name": "k", "scopes": ["admin"]},
        "expires_at": {"name": "k", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
        "allowed_ips": {"name": "k", "scopes": ["read"], "allowed_ips": ["not-an-ip"]},
        "name": {"name": "", "scopes": ["read"]},
        "scopes ": {"name": "k", "scopes": []},
    }
    for path, body in cases.items():
        r = client.post("/api/v1/api-keys/", headers=h, json=body)
        assert r.status_code == 422, (path, r.get_json())
        assert any(e["path"] == path.strip() for e in r.get_json()["errors"]), r.get_json()
