from tests.support.app import api_token, auth


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"


def test_admin_can_list_teams(client, factory):
    admin = factory.user("Admin")
    token = api_token(client, admin["username"])
    r = client.get("/api/v1/teams/", headers=auth(token))
    assert r.status_code == 200, r.get_data(as_text=True)
