"""Workflows API: create, versions, update, rollback, delete, validate, schema."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from capability.models import Workflow, WorkflowVersion
from tests.support.app import api_token, auth, unique

YAML = """
name: {name}
description: Pull new orders
params:
  since: {{type: string, default: "1970-01-01"}}
tasks:
  - id: fetch
    type: noop
    with: {{value: "{{{{ params.since }}}}"}}
  - id: done
    type: noop
    depends_on: [fetch]
"""


def definition(name: str, tasks: int = 1) -> dict:
    return {
        "name": name,
        "tasks": [{"id": f"t{i}", "type": "noop"} for i in range(tasks)],
    }


@pytest.fixture()
def author(client, factory):
    team = factory.team()
    user = factory.user("Author", teams=[team])
    return {"team": team, "user": user, "h": auth(api_token(client, user["username"]))}


def create(client, author, body=None):
    body = body or {"team": author["team"]["name"], "definition": definition(unique("wf"))}
    return client.post("/api/v1/workflows/", json=body, headers=author["h"])


def test_create_json_and_yaml_then_read(client, author):
    r = create(client, author)
    assert r.status_code == 201, r.get_json()
    result = r.get_json()["result"]
    assert result["version"] == 1 and result["team"] == author["team"]["name"]
    assert result["definition"]["tasks"][0]["id"] == "t0"
    name = unique("yaml")
    r = client.post("/api/v1/workflows/", headers=author["h"], json={
        "team": author["team"]["name"], "definition": YAML.format(name=name)})
    assert r.status_code == 201, r.get_json()
    wid = r.get_json()["id"]
    got = client.get(f"/api/v1/workflows/{wid}", headers=author["h"]).get_json()["result"]
    assert got["name"] == name and got["source_format"] == "yaml"
    assert "Pull new orders" in got["source"]
    listed = client.get("/api/v1/workflows/", headers=author["h"]).get_json()
    assert wid in {w["id"] for w in listed["result"]}
    assert {"version", "team"} <= set(listed["result"][0])


def test_versions_update_and_rollback(app, client, author):
    wid = create(client, author).get_json()["id"]
    name = client.get(f"/api/v1/workflows/{wid}", headers=author["h"]).get_json()["result"]["name"]
    r = client.put(f"/api/v1/workflows/{wid}", json={"definition": definition(name, 3)},
                   headers=author["h"])
    assert r.status_code == 200 and r.get_json()["result"]["version"] == 2
    r = client.post(f"/api/v1/workflows/{wid}/rollback", json={"version": 1}, headers=author["h"])
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["result"]["version"] == 3
    assert len(r.get_json()["result"]["definition"]["tasks"]) == 1
    versions = client.get(f"/api/v1/workflows/{wid}/versions", headers=author["h"]).get_json()
    assert [v["version"] for v in versions["result"]] == [3, 2, 1]
    assert versions["result"][0]["note"] == "rollback to v1"
    with app.app_context():
        actions = db.session.execute(
            select(AuditEvent.action).where(AuditEvent.target_id == wid).order_by(AuditEvent.seq)
        ).scalars().all()
    assert actions == ["create", "update", "rollback"]
    bad = client.post(f"/api/v1/workflows/{wid}/rollback", json={"version": 9}, headers=author["h"])
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["path"] == "version"


def test_invalid_definition_lists_every_error_and_saves_nothing(app, client, author):
    with app.app_context():
        before = db.session.execute(select(func.count()).select_from(WorkflowVersion)).scalar()
    bad = {"name": "Bad Name", "tasks": [
        {"id": "a", "type": "noop", "depends_on": ["b"]},
        {"id": "b", "type": "noop", "depends_on": ["a"]},
        {"id": "c", "type": "nope"},
        {"id": "d", "type": "noop", "depends_on": ["zzz"]},
    ]}
    r = client.post("/api/v1/workflows/", json={"team": author["team"]["name"], "definition": bad},
                    headers=author["h"])
    assert r.status_code == 422
    paths = {e["path"] for e in r.get_json()["errors"]}
    assert {"name", "tasks[2].type", "tasks[3].depends_on[0]"} <= paths
    assert any("a -> b -> a" in e["message"] or "b -> a -> b" in e["message"]
               for e in r.get_json()["errors"])
    with app.app_context():
        after = db.session.execute(select(func.count()).select_from(WorkflowVersion)).scalar()
        assert after == before
        event = db.session.execute(
            select(AuditEvent).order_by(AuditEvent.seq.desc())).scalars().first()
        assert (event.action, event.target_type, event.outcome) == ("create", "workflow", "error")


def test_validate_and_schema(client, author):
    r = client.post("/api/v1/workflows/validate", headers=author["h"],
                    json={"definition": definition("ok-one")})
    assert r.get_json() == {"valid": True, "errors": []}
    r = client.post("/api/v1/workflows/validate", headers=author["h"],
                    json={"definition": "name: x\ntasks: [ {id: a, type: noop"})
    body = r.get_json()
    assert r.status_code == 200 and body["valid"] is False and body["errors"]
    schema = client.get("/api/v1/workflows/schema", headers=author["h"])
    assert schema.status_code == 200
    assert "tasks" in str(schema.get_json())


def test_validate_gives_the_line_of_each_error_in_text(client, author):
    """As the editor does: a definition sent as text gets each error's line."""
    text = "name: lines\ntasks:\n  - id: a\n    type: noop\n  - id: b\n    type: nope\n" \
           "    depends_on: [zz]\n"
    r = client.post("/api/v1/workflows/validate", headers=author["h"],
                    json={"definition": text})
    body = r.get_json()
    assert r.status_code == 200 and body["valid"] is False
    lines = {e["path"]: e["line"] for e in body["errors"]}
    assert lines["tasks[1].type"] == 6 and lines["tasks[1].depends_on[0]"] == 7
    # An object has no lines to give.
    r = client.post("/api/v1/workflows/validate", headers=author["h"], json={"definition": {
        "name": "lines", "tasks": [{"id": "b", "type": "nope"}]}})
    assert r.get_json()["valid"] is False
    assert all("line" not in e for e in r.get_json()["errors"])
    # The same lines when the save is refused.
    r = client.post("/api/v1/workflows/", headers=author["h"],
                    json={"team": author["team"]["name"], "definition": text})
    assert r.status_code == 422
    assert {e["path"]: e["line"] for e in r.get_json()["errors"]}["tasks[1].type"] == 6


def test_duplicate_name_and_unknown_team(client, author, factory):
    name = unique("dup")
    assert create(client, author, {"team": author["team"]["name"],
                                   "definition": definition(name)}).status_code == 201
    r = create(client, author, {"team": author["team"]["name"], "definition": definition(name)})
    assert r.status_code == 409
    other = factory.team()
    r = create(client, author, {"team": other["name"], "definition": definition(unique("x"))})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "team"
    r = create(client, author, {"team": author["team"]["name"], "definition": definition("a"),
                                "colour": "red"})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "colour"


def test_soft_delete_hides_but_keeps_versions(app, client, author):
    wid = create(client, author).get_json()["id"]
    assert client.delete(f"/api/v1/workflows/{wid}", headers=author["h"]).status_code == 200
    assert client.get(f"/api/v1/workflows/{wid}", headers=author["h"]).status_code == 404
    assert wid not in {w["id"] for w in client.get(
        "/api/v1/workflows/", headers=author["h"]).get_json()["result"]}
    with app.app_context():
        assert db.session.get(Workflow, wid).deleted_at is not None
        assert db.session.execute(select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == wid)).first() is not None
        action = db.session.execute(select(AuditEvent.action).where(
            AuditEvent.target_id == wid).order_by(AuditEvent.seq.desc())).scalar()
    assert action == "delete"
