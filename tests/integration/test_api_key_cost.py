"""What a key costs a request: no more statements than the same list with a JWT (the
key, its user and teams read once; nothing per permission check)."""

from __future__ import annotations

from tests.support.app import Factory, api_token, auth
from tests.support.driver import statements


def test_a_keyed_request_costs_a_few_statements_more_than_a_token(app, client):
    f = Factory(app)
    team = f.team()
    user = f.user("Author", teams=[team])
    jwt = auth(api_token(client, user["username"]))
    key = client.post("/api/v1/api-keys/", headers=jwt, json={
        "name": "cost", "scopes": ["read"]}).get_json()["result"]["key"]
    keyed = auth(key)
    for h in (jwt, keyed):  # warm: the permission pairs of each role set
        assert client.get("/api/v1/runs/", headers=h).status_code == 200
    with statements(app) as by_token:
        assert client.get("/api/v1/runs/", headers=jwt).status_code == 200
    with statements(app) as by_key:
        assert client.get("/api/v1/runs/", headers=keyed).status_code == 200
    # The key's own statement takes the place of the token's credentials generation;
    # its user's teams and roles cost what a token's do.
    assert len(by_key) <= len(by_token), (len(by_token), by_key)


def _alone(seen: list[str], table: str) -> list[str]:
    """Statements that read ``table`` and nothing of the request's credentials."""
    return [s for s in seen if table in s and "apg_user_credentials" not in s
            and "apg_api_key" not in s]


def test_credentials_epoch_and_teams_come_in_one_statement(app, client):
    """Every signed-in request (token, key, UI session) reads its credentials, the
    permission epoch and its user's teams in one statement, not three."""
    f = Factory(app)
    team = f.team()
    user = f.user("Author", teams=[team])
    jwt = auth(api_token(client, user["username"]))
    keyed = auth(client.post("/api/v1/api-keys/", headers=jwt, json={
        "name": "one", "scopes": ["read"]}).get_json()["result"]["key"])
    browser = app.test_client()
    assert browser.post("/login/", data={"username": user["username"],
                                         "password": user["password"]}).status_code == 302
    calls = {"token": lambda: client.get("/api/v1/runs/", headers=jwt),
             "key": lambda: client.get("/api/v1/runs/", headers=keyed),
             "session": lambda: browser.get("/runs/list/")}
    for who, call in calls.items():
        assert call().status_code == 200, who  # warm: the permission pairs
        with statements(app) as seen:
            answer = call()
        assert answer.status_code == 200, who
        assert _alone(seen, "apg_permission_epoch") == [], (who, seen)
        assert _alone(seen, "apg_team_membership") == [], (who, seen)
