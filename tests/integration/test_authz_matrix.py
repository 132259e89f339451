"""Role x endpoint x own/other team/other tenant: the status each combination gets."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from tests.support.app import api_token, auth, unique

ROLES = ["Admin", "Author", "Operator", "Viewer", "Auditor"]


@pytest.fixture(scope="module")
def world(app) -> dict[str, Any]:
    from tests.support.app import Factory

    f = Factory(app)
    other_tenant = f.tenant()
    own = f.team()
    other = f.team()
    foreign = f.team(tenant=other_tenant.name)
    users = {role: f.user(role, teams=[own]) for role in ROLES}
    foreign_auditor = f.user("Auditor", teams=[foreign])
    client = app.test_client()
    tokens = {role: api_token(client, users[role]["username"]) for role in ROLES}
    tokens["ForeignAuditor"] = api_token(client, foreign_auditor["username"])
    # Give the foreign tenant an audit event of its own to try to read.
    admin_h = auth(tokens["Admin"])
    client.put(f"/api/v1/teams/{foreign['id']}", json={"name": foreign["name"]}, headers=admin_h)
    with app.app_context():
        foreign_event = db.session.execute(
            select(AuditEvent.id).where(AuditEvent.tenant == other_tenant.name)
            .order_by(AuditEvent.seq.desc())
        ).scalars().first()
    workflows = {}
    for key, team in (("own", own), ("other", other), ("foreign", foreign)):
        r = client.post("/api/v1/workflows/", headers=admin_h, json={
            "team": f"{team['tenant']}/{team['name']}", "definition": _definition(unique("wf"))})
        assert r.status_code == 201, r.get_json()
        workflows[key] = {"id": r.get_json()["id"], "name": r.get_json()["result"]["name"]}
        started = client.post(f"/api/v1/workflows/{workflows[key]['id']}/runs", headers=admin_h,
                              json={})
        assert started.status_code == 201, started.get_json()
        workflows[key]["run"] = started.get_json()["id"]
        made = client.post("/api/v1/schedules/", headers=admin_h, json={
            "workflow_id": workflows[key]["id"], "cron": "@daily"})
        assert made.status_code == 201, made.get_json()
        workflows[key]["schedule"] = made.get_json()["id"]
        made = client.post("/api/v1/webhooks/", headers=admin_h, json={
            "workflow_id": workflows[key]["id"], "name": "hook"})
        assert made.status_code == 201, made.get_json()
        workflows[key]["webhook"] = made.get_json()["id"]
        made = client.post("/api/v1/connections/", headers=admin_h, json={
            "team": f"{team['tenant']}/{team['name']}", "name": "conn", "type": "sqlite",
            "config": {"path": "conn.db"}})
        assert made.status_code == 201, made.get_json()
        workflows[key]["connection"] = made.get_json()["id"]
    return {"own": own, "other": other, "foreign": foreign, "users": users, "tokens": tokens,
            "foreign_event": foreign_event, "wf": workflows}


def _definition(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": [{"id": "only", "type": "noop"}]}


def _roles(admin: int, author: int, operator: int, viewer: int, auditor: int) -> dict[str, int]:
    return {"Admin": admin, "Author": author, "Operator": operator, "Viewer": viewer,
            "Auditor": auditor}


def _expect(admin: int, member: int, auditor: int) -> dict[str, int]:
    return {"Admin": admin, "Author": member, "Operator": member, "Viewer": member,
            "Auditor": auditor}


# (name, method, path template, json body, expected status per role)
CASES = [
    ("tenants list", "GET", "/api/v1/tenants/", None, _expect(200, 403, 403)),
    ("tenant create", "POST", "/api/v1/tenants/", {"name": "@new"}, _expect(201, 403, 403)),
    ("teams list", "GET", "/api/v1/teams/", None, _expect(200, 200, 403)),
    ("team get own", "GET", "/api/v1/teams/{own}", None, _expect(200, 200, 403)),
    ("team get other team", "GET", "/api/v1/teams/{other}", None, _expect(200, 404, 403)),
    ("team get other tenant", "GET", "/api/v1/teams/{foreign}", None, _expect(200, 404, 403)),
    ("team create", "POST", "/api/v1/teams/", {"name": "@new"}, _expect(201, 403, 403)),
    ("team rename own", "PUT", "/api/v1/teams/{own}", {"name": "@own"}, _expect(200, 403, 403)),
    ("team rename other tenant", "PUT", "/api/v1/teams/{foreign}", {"name": "@foreign"},
     _expect(200, 403, 403)),
    ("member add", "POST", "/api/v1/teams/{other}/members", {"username": "@viewer"},
     _expect(201, 403, 403)),
    ("member remove", "DELETE", "/api/v1/teams/{other}/members/@viewer", None,
     _expect(200, 403, 403)),
    ("team delete", "DELETE", "/api/v1/teams/@scratch", None, _expect(200, 403, 403)),
    ("audit list", "GET", "/api/v1/audit/", None, _expect(200, 403, 200)),
    ("audit export", "GET", "/api/v1/audit/export.csv", None, _expect(200, 403, 200)),
    ("audit event other tenant", "GET", "/api/v1/audit/{foreign_event}", None,
     _expect(200, 403, 404)),
    ("workflows list", "GET", "/api/v1/workflows/", None, _expect(200, 200, 403)),
    ("workflow get own", "GET", "/api/v1/workflows/{wf_own}", None, _expect(200, 200, 403)),
    ("workflow get other team", "GET", "/api/v1/workflows/{wf_other}", None,
     _expect(200, 404, 403)),
    ("workflow get other tenant", "GET", "/api/v1/workflows/{wf_foreign}", None,
     _expect(200, 404, 403)),
    ("workflow versions other tenant", "GET", "/api/v1/workflows/{wf_foreign}/versions", None,
     _expect(200, 404, 403)),
    ("workflow create in own team", "POST", "/api/v1/workflows/",
     {"team": "@ownteam", "definition": "@definition"}, _roles(201, 201, 403, 403, 403)),
    ("workflow create in other team", "POST", "/api/v1/workflows/",
     {"team": "@otherteam", "definition": "@definition"}, _roles(201, 422, 403, 403, 403)),
    ("workflow update own", "PUT", "/api/v1/workflows/{wf_own}",
     {"definition": "@same_own"}, _roles(200, 200, 403, 403, 403)),
    ("workflow update other team", "PUT", "/api/v1/workflows/{wf_other}",
     {"definition": "@same_other"}, _roles(200, 404, 403, 403, 403)),
    ("workflow rollback own", "POST", "/api/v1/workflows/{wf_own}/rollback", {"version": 1},
     _roles(200, 200, 403, 403, 403)),
    ("workflow rollback other tenant", "POST", "/api/v1/workflows/{wf_foreign}/rollback",
     {"version": 1}, _roles(200, 404, 403, 403, 403)),
    ("workflow delete own", "DELETE", "/api/v1/workflows/@scratch_wf", None,
     _roles(200, 200, 403, 403, 403)),
    ("workflow delete other team", "DELETE", "/api/v1/workflows/{wf_other_scratch}", None,
     _roles(200, 404, 403, 403, 403)),
    ("workflow validate", "POST", "/api/v1/workflows/validate", {"definition": "@definition"},
     _expect(200, 200, 403)),
    ("workflow schema", "GET", "/api/v1/workflows/schema", None, _expect(200, 200, 403)),
    ("run start own", "POST", "/api/v1/workflows/{wf_own}/runs", {"params": {}},
     _roles(201, 201, 201, 403, 403)),
    ("run start other team", "POST", "/api/v1/workflows/{wf_other}/runs", {"params": {}},
     _roles(201, 404, 404, 403, 403)),
    ("runs list", "GET", "/api/v1/runs/", None, _expect(200, 200, 403)),
    ("run cancel own", "POST", "/api/v1/runs/@fresh_run_own/cancel", None,
     _roles(200, 200, 200, 403, 403)),
    ("run cancel other team", "POST", "/api/v1/runs/@fresh_run_other/cancel", None,
     _roles(200, 404, 404, 403, 403)),
    ("run pause other tenant", "POST", "/api/v1/runs/@fresh_run_foreign/pause", None,
     _roles(200, 404, 404, 403, 403)),
    ("run retry own (nothing failed)", "POST", "/api/v1/runs/@fresh_run_own/retry", None,
     _roles(409, 409, 409, 403, 403)),
    ("approve other team", "POST", "/api/v1/runs/@fresh_run_other/tasks/only/approve",
     {"comment": "ok"}, _roles(409, 404, 404, 403, 403)),
    ("run get own", "GET", "/api/v1/runs/{run_own}", None, _expect(200, 200, 403)),
    ("run get other team", "GET", "/api/v1/runs/{run_other}", None, _expect(200, 404, 403)),
    ("run get other tenant", "GET", "/api/v1/runs/{run_foreign}", None,
     _expect(200, 404, 403)),
    # A scope with an unknown upstream task: 422 for whoever may test (no worker needed).
    ("test step own", "POST", "/api/v1/workflows/{wf_own}/tasks/only/test",
     {"upstream": {"nope": {"output": 1}}}, _roles(422, 422, 403, 403, 403)),
    ("test step other team", "POST", "/api/v1/workflows/{wf_other}/tasks/only/test",
     {"upstream": {"nope": {"output": 1}}}, _roles(422, 404, 403, 403, 403)),
    ("test step other tenant", "POST", "/api/v1/workflows/{wf_foreign}/tasks/only/test",
     {"upstream": {"nope": {"output": 1}}}, _roles(422, 404, 403, 403, 403)),
    ("run task logs own", "GET", "/api/v1/runs/{run_own}/tasks/only/logs", None,
     _expect(200, 200, 403)),
    ("run task logs other team", "GET", "/api/v1/runs/{run_other}/tasks/only/logs", None,
     _expect(200, 404, 403)),
    ("run task logs other tenant", "GET", "/api/v1/runs/{run_foreign}/tasks/only/logs", None,
     _expect(200, 404, 403)),
    ("schedules list", "GET", "/api/v1/schedules/", None, _expect(200, 200, 403)),
    ("schedule get own", "GET", "/api/v1/schedules/{sch_own}", None, _expect(200, 200, 403)),
    ("schedule get other team", "GET", "/api/v1/schedules/{sch_other}", None,
     _expect(200, 404, 403)),
    ("schedule get other tenant", "GET", "/api/v1/schedules/{sch_foreign}", None,
     _expect(200, 404, 403)),
    ("schedule ticks other team", "GET", "/api/v1/schedules/{sch_other}/ticks", None,
     _expect(200, 404, 403)),
    ("schedule create own", "POST", "/api/v1/schedules/",
     {"workflow_id": "{wf_own}", "cron": "@daily"}, _roles(201, 201, 403, 403, 403)),
    ("schedule create other team", "POST", "/api/v1/schedules/",
     {"workflow_id": "{wf_other}", "cron": "@daily"}, _roles(201, 404, 403, 403, 403)),
    ("schedule update own", "PUT", "/api/v1/schedules/{sch_own}",
     {"workflow_id": "{wf_own}", "cron": "@daily"}, _roles(200, 200, 403, 403, 403)),
    ("schedule update other tenant", "PUT", "/api/v1/schedules/{sch_foreign}",
     {"workflow_id": "{wf_foreign}", "cron": "@daily"}, _roles(200, 404, 403, 403, 403)),
    ("schedule pause own", "POST", "/api/v1/schedules/{sch_own}/pause", None,
     _roles(200, 200, 200, 403, 403)),
    ("schedule pause other team", "POST", "/api/v1/schedules/{sch_other}/pause", None,
     _roles(200, 404, 404, 403, 403)),
    ("schedule resume other tenant", "POST", "/api/v1/schedules/{sch_foreign}/resume", None,
     _roles(200, 404, 404, 403, 403)),
    ("schedule delete own", "DELETE", "/api/v1/schedules/@fresh_schedule_own", None,
     _roles(200, 200, 403, 403, 403)),
    ("schedule delete other team", "DELETE", "/api/v1/schedules/@fresh_schedule_other", None,
     _roles(200, 404, 403, 403, 403)),
    ("schedule preview", "POST", "/api/v1/schedules/preview", {"cron": "@daily"},
     _expect(200, 200, 403)),
    ("webhooks list", "GET", "/api/v1/webhooks/", None, _expect(200, 200, 403)),
    ("webhook get own", "GET", "/api/v1/webhooks/{wh_own}", None, _expect(200, 200, 403)),
    ("webhook get other team", "GET", "/api/v1/webhooks/{wh_other}", None,
     _expect(200, 404, 403)),
    ("webhook deliveries other tenant", "GET", "/api/v1/webhooks/{wh_foreign}/deliveries",
     None, _expect(200, 404, 403)),
    ("webhook create own", "POST", "/api/v1/webhooks/",
     {"workflow_id": "{wf_own}", "name": "h"}, _roles(201, 201, 403, 403, 403)),
    ("webhook create other team", "POST", "/api/v1/webhooks/",
     {"workflow_id": "{wf_other}", "name": "h"}, _roles(201, 404, 403, 403, 403)),
    ("webhook update other tenant", "PUT", "/api/v1/webhooks/{wh_foreign}",
     {"workflow_id": "{wf_foreign}", "name": "h"}, _roles(200, 404, 403, 403, 403)),
    ("webhook rotate own", "POST", "/api/v1/webhooks/{wh_own}/rotate-token", None,
     _roles(200, 200, 403, 403, 403)),
    ("webhook rotate other team", "POST", "/api/v1/webhooks/{wh_other}/rotate-token", None,
     _roles(200, 404, 403, 403, 403)),
    ("webhook delete other team", "DELETE", "/api/v1/webhooks/@fresh_webhook_other", None,
     _roles(200, 404, 403, 403, 403)),
    ("event triggers list", "GET", "/api/v1/event-triggers/", None, _expect(200, 200, 403)),
    ("event trigger create own", "POST", "/api/v1/event-triggers/",
     {"workflow_id": "{wf_own}", "on": {"event": "e.x"}}, _roles(201, 201, 403, 403, 403)),
    ("event trigger create other team", "POST", "/api/v1/event-triggers/",
     {"workflow_id": "{wf_other}", "on": {"event": "e.x"}}, _roles(201, 404, 403, 403, 403)),
    ("event post own team", "POST", "/api/v1/events/e.x", {"team": "@ownteam"},
     _roles(202, 202, 202, 403, 403)),
    ("event post other team", "POST", "/api/v1/events/e.x", {"team": "@otherteam"},
     _roles(202, 422, 422, 403, 403)),
    ("connections list", "GET", "/api/v1/connections/", None, _expect(200, 200, 403)),
    ("connection types", "GET", "/api/v1/connections/types", None, _expect(200, 200, 403)),
    ("connection get own", "GET", "/api/v1/connections/{cn_own}", None,
     _expect(200, 200, 403)),
    ("connection get other team", "GET", "/api/v1/connections/{cn_other}", None,
     _expect(200, 404, 403)),
    ("connection get other tenant", "GET", "/api/v1/connections/{cn_foreign}", None,
     _expect(200, 404, 403)),
    ("connection create own", "POST", "/api/v1/connections/",
     {"team": "@ownteam", "name": "@new", "type": "sqlite", "config": {"path": "a.db"}},
     _roles(201, 201, 403, 403, 403)),
    ("connection create other team", "POST", "/api/v1/connections/",
     {"team": "@otherteam", "name": "@new", "type": "sqlite", "config": {"path": "a.db"}},
     _roles(201, 422, 403, 403, 403)),
    ("connection update own", "PUT", "/api/v1/connections/{cn_own}",
     {"config": {"path": "b.db"}}, _roles(200, 200, 403, 403, 403)),
    ("connection update other team", "PUT", "/api/v1/connections/{cn_other}",
     {"config": {"path": "b.db"}}, _roles(200, 404, 403, 403, 403)),
    ("connection test own", "POST", "/api/v1/connections/{cn_own}/test", None,
     _roles(200, 200, 403, 403, 403)),
    ("connection test other tenant", "POST", "/api/v1/connections/{cn_foreign}/test", None,
     _roles(200, 404, 403, 403, 403)),
    ("connection delete own", "DELETE", "/api/v1/connections/@fresh_connection_own", None,
     _roles(200, 200, 403, 403, 403)),
    ("connection delete other team", "DELETE", "/api/v1/connections/@fresh_connection_other",
     None, _roles(200, 404, 403, 403, 403)),
    ("capabilities", "GET", "/api/v1/capabilities/", None, _expect(200, 403, 403)),
    ("workers", "GET", "/api/v1/workers/", None, _expect(200, 403, 403)),
    ("security users", "GET", "/api/v1/security/users/", None, _expect(200, 403, 403)),
    ("security roles", "GET", "/api/v1/security/roles/", None, _expect(200, 403, 403)),
]


def _scratch_workflow(app, world, team_key: str) -> str:
    client = app.test_client()
    team = world[team_key]
    r = client.post("/api/v1/workflows/", headers=auth(world["tokens"]["Admin"]), json={
        "team": f"{team['tenant']}/{team['name']}", "definition": _definition(unique("scratch"))})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def _value(app, world, role, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "@definition":
        return _definition(unique("new"))
    if value == "@same_own":
        return _definition(world["wf"]["own"]["name"])
    if value == "@same_other":
        return _definition(world["wf"]["other"]["name"])
    if value == "@ownteam":
        return f"{world['own']['tenant']}/{world['own']['name']}"
    if value == "@otherteam":
        return f"{world['other']['tenant']}/{world['other']['name']}"
    return _fill(app, world, role, value)


def _fill(app, world, role, text: str) -> str:
    from tests.support.app import Factory

    for key in ("own", "other", "foreign"):
        marker = f"@fresh_run_{key}"
        if marker in text:
            r = app.test_client().post(f"/api/v1/workflows/{world['wf'][key]['id']}/runs",
                                       headers=auth(world["tokens"]["Admin"]), json={})
            text = text.replace(marker, r.get_json()["id"])
        marker = f"@fresh_schedule_{key}"
        if marker in text:
            r = app.test_client().post("/api/v1/schedules/", json={
                "workflow_id": world["wf"][key]["id"], "cron": "@daily"},
                headers=auth(world["tokens"]["Admin"]))
            text = text.replace(marker, r.get_json()["id"])
        marker = f"@fresh_connection_{key}"
        if marker in text:
            team = world[key]
            r = app.test_client().post("/api/v1/connections/", json={
                "team": f"{team['tenant']}/{team['name']}", "name": unique("fresh"),
                "type": "sqlite", "config": {"path": "fresh.db"}},
                headers=auth(world["tokens"]["Admin"]))
            text = text.replace(marker, r.get_json()["id"])
        marker = f"@fresh_webhook_{key}"
        if marker in text:
            r = app.test_client().post("/api/v1/webhooks/", json={
                "workflow_id": world["wf"][key]["id"], "name": "fresh"},
                headers=auth(world["tokens"]["Admin"]))
            text = text.replace(marker, r.get_json()["id"])
    if "@scratch_wf" in text:
        text = text.replace("@scratch_wf", _scratch_workflow(app, world, "own"))
    if "{wf_other_scratch}" in text:
        text = text.replace("{wf_other_scratch}", _scratch_workflow(app, world, "other"))
    if "@scratch" in text:
        text = text.replace("@scratch", Factory(app).team()["id"])
    for key in ("own", "other", "foreign"):
        text = text.replace("{wf_" + key + "}", world["wf"][key]["id"])
        text = text.replace("{run_" + key + "}", world["wf"][key]["run"])
        text = text.replace("{sch_" + key + "}", world["wf"][key]["schedule"])
        text = text.replace("{wh_" + key + "}", world["wf"][key]["webhook"])
        text = text.replace("{cn_" + key + "}", world["wf"][key]["connection"])
    return (
        text.replace("{own}", world["own"]["id"])
        .replace("{other}", world["other"]["id"])
        .replace("{foreign}", world["foreign"]["id"])
        .replace("{foreign_event}", str(world["foreign_event"]))
        .replace("@viewer", world["users"]["Viewer"]["username"])
        .replace("@new", unique("new"))
        .replace("@own", world["own"]["name"])
        .replace("@foreign", world["foreign"]["name"])
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_api_matrix(app, client, world, case, role):
    name, method, path, body, expected = case
    path = _fill(app, world, role, path)
    json_body = {k: _value(app, world, role, v) for k, v in body.items()} if body else None
    if name == "member remove" and role == "Admin":
        # Removing needs a membership to exist first.
        client.post(f"/api/v1/teams/{world['other']['id']}/members",
                    json={"username": world["users"]["Viewer"]["username"]},
                    headers=auth(world["tokens"]["Admin"]))
    r = client.open(path, method=method, json=json_body, headers=auth(world["tokens"][role]))
    assert r.status_code == expected[role], (name, role, r.get_data(as_text=True)[:300])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_api_matrix_anonymous(app, client, world, case):
    _, method, path, body, _ = case
    path = path.replace("@scratch_wf", "x").replace("{wf_other_scratch}", "x")
    for key in ("own", "other", "foreign"):
        path = path.replace(f"@fresh_run_{key}", "x").replace(f"@fresh_schedule_{key}", "x")
        path = path.replace(f"@fresh_webhook_{key}", "x")
        path = path.replace(f"@fresh_connection_{key}", "x")
    path = _fill(app, world, "anonymous", path)
    r = client.open(path, method=method, json=body)
    assert r.status_code == 401


def test_members_see_only_their_teams_runs(client, world):
    for role in ("Author", "Operator", "Viewer"):
        r = client.get("/api/v1/runs/?page_size=100", headers=auth(world["tokens"][role]))
        teams = {run["team"] for run in r.get_json()["result"]}
        assert teams == {world["own"]["name"]}, role


def test_members_see_only_their_teams_in_lists(client, world):
    for role in ("Author", "Operator", "Viewer"):
        r = client.get("/api/v1/teams/", headers=auth(world["tokens"][role]))
        ids = {t["id"] for t in r.get_json()["result"]}
        assert ids == {world["own"]["id"]}, role
    r = client.get("/api/v1/teams/", headers=auth(world["tokens"]["Admin"]))
    assert r.get_json()["count"] >= 3


def test_auditor_reads_only_own_tenant(client, world):
    r = client.get("/api/v1/audit/?page_size=100", headers=auth(world["tokens"]["Auditor"]))
    assert {e["tenant"] for e in r.get_json()["result"]} <= {"default"}
    r = client.get("/api/v1/audit/", headers=auth(world["tokens"]["ForeignAuditor"]))
    tenants = {e["tenant"] for e in r.get_json()["result"]}
    assert "default" not in tenants and tenants


UI_CASES = [
    ("teams list", "/teamview/list/", _expect(200, 200, 403)),
    ("team show other", "/teamview/show/{other}", _expect(200, 404, 403)),
    ("tenants list", "/tenantview/list/", _expect(200, 403, 403)),
    ("audit trail", "/audit/list/", _expect(200, 403, 200)),
    ("audit export", "/audit/export.csv", _expect(200, 403, 200)),
    ("capabilities", "/capabilities/", _expect(200, 403, 403)),
    ("workers", "/workers/", _expect(200, 403, 403)),
    ("users", "/users/list/", _expect(200, 403, 403)),
    ("connections", "/connections/", _expect(200, 200, 403)),
    ("connection form", "/connections/new?type=sqlite", _roles(200, 200, 403, 403, 403)),
    ("task types", "/workflows/task-types", _expect(200, 200, 403)),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", UI_CASES, ids=[c[0] for c in UI_CASES])
def test_ui_matrix(app, world, case, role):
    name, path, expected = case
    client = app.test_client()
    user = world["users"][role]
    login = client.post(
        "/login/", data={"username": user["username"], "password": user["password"]}
    )
    assert login.status_code == 302
    r = client.get(_fill(app, world, role, path))
    assert r.status_code == expected[role], (name, role)


def test_ui_list_shows_only_own_teams(app, world):
    client = app.test_client()
    user = world["users"]["Viewer"]
    client.post("/login/", data={"username": user["username"], "password": user["password"]})
    page = client.get("/teamview/list/").get_data(as_text=True)
    assert world["own"]["name"] in page
    assert world["other"]["name"] not in page and world["foreign"]["name"] not in page
