from tests.support.app import api_token, auth


def test_health(app, client, factory, monkeypatch):
    monkeypatch.setitem(app.config, "HEALTH_WORKER_GRACE", 3600)  # no worker runs here
    r = client.get("/health")
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"status": "ok"}  # anonymous: the verdict only
    token = api_token(client, factory.user("Viewer")["username"])
    body = client.get("/health", headers=auth(token)).get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"


def test_admin_can_list_teams(client, factory):
    admin = factory.user("Admin")
    token = api_token(client, admin["username"])
    r = client.get("/api/v1/teams/", headers=auth(token))
    assert r.status_code == 200, r.get_data(as_text=True)
