"""Workflow pages (the FAB UI): who sees what, the editor's form, rollback, diff, and
``locate()`` (a DSL error path to a line of the author's text)."""

from __future__ import annotations

import html as htmllib
import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from capability.dsl import locate, locate_issues
from capability.models import Workflow, WorkflowVersion
from capability.views import side_by_side
from tests.support.app import PASSWORD, api_token, auth, unique

MEMBERS = ["Author", "Operator", "Viewer"]

GOOD = """\
name: {name}
description: Pull new orders
tasks:
  - id: fetch
    type: noop
  - id: push
    type: noop
    depends_on: [fetch]
"""
# Line 8 names an unknown task; line 9 has an unknown task type.
BAD = """\
name: {name}
tasks:
  - id: fetch
    type: noop
  - id: push
    type: noop
    depends_on:
      - fecth
  - id: tell
    type: carrier-pigeon
"""


@pytest.fixture(scope="module")
def world(app: Flask) -> dict[str, Any]:
    from tests.support.app import Factory

    f = Factory(app)
    own, other = f.team(), f.team()
    users = {role: f.user(role, teams=[own]) for role in [*MEMBERS, "Auditor"]}
    users["Outsider"] = f.user("Author", teams=[other])
    client = app.test_client()
    admin = auth(api_token(client, f.user("Admin")["username"]))
    workflows = {}
    for key, team in (("own", own), ("other", other)):
        r = client.post("/api/v1/workflows/", headers=admin, json={
            "team": team["name"], "definition": GOOD.format(name=unique("wf"))})
        assert r.status_code == 201, r.get_json()
        workflows[key] = r.get_json()["result"]
    return {"own": own, "other": other, "users": users, "wf": workflows}


def login(app: Flask, user: dict[str, Any]) -> FlaskClient:
    client = app.test_client()
    r = client.post("/login/", data={"username": user["username"], "password": PASSWORD})
    assert r.status_code == 302, r.get_data(as_text=True)
    return client


def last_event(app: Flask, **where: Any) -> AuditEvent:
    with app.app_context():
        stmt = select(AuditEvent).order_by(AuditEvent.seq.desc())
        for column, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, column) == value)
        event = db.session.execute(stmt).scalars().first()
        db.session.expunge_all()
    assert event is not None, where
    return event


def versions(app: Flask, workflow_id: str) -> list[WorkflowVersion]:
    with app.app_context():
        rows = list(db.session.execute(
            select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow_id)
            .order_by(WorkflowVersion.version)).scalars())
        db.session.expunge_all()
    return rows


# -- who sees what -------------------------------------------------------------------
READ_PAGES = ["/workflows/list/", "/workflows/{own}", "/workflows/{own}/diff",
              "/workflows/task-types"]


@pytest.mark.parametrize("role", [*MEMBERS, "Auditor"])
@pytest.mark.parametrize("path", READ_PAGES)
def test_read_pages_by_role(app, world, role, path):
    client = login(app, world["users"][role])
    r = client.get(path.format(own=world["wf"]["own"]["id"]))
    assert r.status_code == (403 if role == "Auditor" else 200), r.get_data(as_text=True)[:300]


@pytest.mark.parametrize("role", MEMBERS)
@pytest.mark.parametrize("suffix", ["", "/diff", "/edit"])
def test_another_teams_workflow_is_not_found(app, world, role, suffix):
    client = login(app, world["users"][role])
    r = client.get(f"/workflows/{world['wf']['other']['id']}{suffix}")
    expected = 403 if suffix == "/edit" and role != "Author" else 404
    assert r.status_code == expected
    assert f'id="error-{expected}"' in r.get_data(as_text=True)


def test_list_shows_own_live_workflows_with_links(app, world):
    client = login(app, world["users"]["Viewer"])
    html = client.get("/workflows/list/").get_data(as_text=True)
    own, other = world["wf"]["own"], world["wf"]["other"]
    assert own["name"] in html and other["name"] not in html
    assert f'href="/workflows/{own["id"]}"' in html
    assert 'id="new-workflow"' not in html  # a Viewer cannot write
    assert not re.search(r'(src|href)="(https?:)?//', html)
    author = login(app, world["users"]["Author"])
    assert 'id="new-workflow"' in author.get("/workflows/list/").get_data(as_text=True)
    found = author.get("/workflows/list/", query_string={"_flt_0_name": own["name"][:6]})
    assert own["name"] in found.get_data(as_text=True)


def test_task_palette_lists_every_type_and_the_menu_links_it(app, world):
    from capability import dsl

    client = login(app, world["users"]["Viewer"])
    page = client.get("/workflows/task-types").get_data(as_text=True)
    names = dsl.registry.names()
    assert {"noop", "http", "workflow", "sql", "email", "llm"} <= set(names)
    for name in names:
        assert f'id="type-{name}"' in page, name
    sql = re.search(r'id="type-sql".*?</section>', page, re.S).group(0)
    assert "max_rows" in sql and "1 to 100000" in sql and "<code>1000</code>" in sql
    assert 'href="/connections/"' in sql and "<code>postgres</code>" in sql
    assert "id: my_sql" in sql and "type: sql" in sql
    assert 'href="/workflows/task-types"' in client.get("/workflows/list/").get_data(as_text=True)
    auditor = login(app, world["users"]["Auditor"])
    assert auditor.get("/workflows/task-types").status_code == 403
    assert "/workflows/task-types" not in auditor.get("/").get_data(as_text=True)


def test_the_editor_carries_the_help_of_every_type(app, world):
    from capability import dsl

    client = login(app, world["users"]["Author"])
    page = client.get("/workflows/new").get_data(as_text=True)
    for name in dsl.registry.names():
        assert f'<template id="task-help-{name}" data-type="{name}">' in page, name
    assert 'id="task-help"' in page and 'data-palette-url="/workflows/task-types"' in page
    assert "js/task_help.js" in page


def test_fab_forms_for_workflows_do_not_exist(app, world):
    client = login(app, world["users"]["Author"])
    wid = world["wf"]["own"]["id"]
    for path in ("/workflows/add", f"/workflows/edit/{wid}", f"/workflows/show/{wid}"):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/workflows/delete/{wid}").status_code in (404, 405)


def test_page_shows_definition_versions_and_writer_buttons(app, world):
    wf = world["wf"]["own"]
    author = login(app, world["users"]["Author"]).get(f"/workflows/{wf['id']}")
    html = author.get_data(as_text=True)
    assert author.status_code == 200
    assert wf["name"] in html and "Pull new orders" in html and "depends_on: [fetch]" in html
    assert 'id="version-1"' in html and 'id="edit-workflow"' in html
    assert 'id="delete-workflow"' in html
    assert "vendor/codemirror/lib/codemirror.js" in html
    viewer = login(app, world["users"]["Viewer"]).get(f"/workflows/{wf['id']}")
    assert 'id="edit-workflow"' not in viewer.get_data(as_text=True)
    # The graph of the current version, for static/js/graph.js to draw: no run, no status.
    graph = re.search(r'<svg[^>]*id="workflow-graph" data-graph=\'([^\']*)\'', html)
    assert graph, html[:3000]
    data = json.loads(htmllib.unescape(graph.group(1)))
    assert data == {"nodes": [
        {"id": "fetch", "type": "noop", "status": None, "for_each": False, "items": None},
        {"id": "push", "type": "noop", "status": None, "for_each": False, "items": None}],
        "edges": [["fetch", "push"]]}
    assert "vendor/dagre/dagre.min.js" in html and "js/graph.js" in html


def test_home_page_says_only_what_exists(app, world):
    """No schedules, webhooks or events yet: the home page must not promise them."""
    for client in (app.test_client(), login(app, world["users"]["Viewer"])):
        page = client.get("/").get_data(as_text=True)
        tagline = re.search(r'<p class="apg-tagline">(.*?)</p>', page, re.S)
        assert tagline, page[:2000]
        text = " ".join(tagline.group(1).split())
        for promise in ("schedule", "event", "webhook", "cron"):
            assert promise not in text.lower(), text
        for feature in ("versions", "REST API", "live", "retries", "approvals",
                        "sub-workflows", "secrets", "audit trail"):
            assert feature in text, (feature, text)


# -- writing through the forms -------------------------------------------------------
def test_author_creates_a_workflow_through_the_form(app, world):
    client = login(app, world["users"]["Author"])
    page = client.get("/workflows/new").get_data(as_text=True)
    assert f'value="{world["own"]["tenant"]}/{world["own"]["name"]}"' in page
    assert world["other"]["name"] not in page  # only teams the user may write to
    name = unique("form")
    r = client.post("/workflows/new", data={
        "team": world["own"]["name"], "definition": GOOD.format(name=name)})
    assert r.status_code == 302, r.get_data(as_text=True)
    with app.app_context():
        workflow = db.session.execute(select(Workflow).where(Workflow.name == name)).scalar_one()
        wid, team_id = workflow.id, workflow.team_id
    assert r.headers["Location"].endswith(f"/workflows/{wid}")
    assert team_id == world["own"]["id"]
    html = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "created: version 1" in html and name in html
    assert versions(app, wid)[0].source == GOOD.format(name=name)


def test_bad_definition_shows_errors_on_their_lines_saves_nothing_and_is_audited(app, world):
    client = login(app, world["users"]["Author"])
    with app.app_context():
        before = db.session.execute(select(func.count()).select_from(WorkflowVersion)).scalar()
    name = unique("bad")
    r = client.post("/workflows/new", data={
        "team": world["own"]["name"], "definition": BAD.format(name=name)})
    assert r.status_code == 422
    html = r.get_data(as_text=True)
    items = re.findall(r'<li class="apg-error" data-line="(\d*)"[^>]*>.*?<code>([^<]+)</code>',
                       html, re.S)
    assert ("8", "tasks[1].depends_on[0]") in items, items
    assert ("10", "tasks[2].type") in items, items
    assert name in html  # the text is kept in the editor
    with app.app_context():
        after = db.session.execute(select(func.count()).select_from(WorkflowVersion)).scalar()
    assert after == before
    event = last_event(app, target_type="workflow", action="create")
    assert event.outcome == "error" and event.actor == world["users"]["Author"]["username"]


def test_check_returns_errors_with_lines(app, world):
    client = login(app, world["users"]["Viewer"])  # validating needs read only, as in the API
    r = client.post("/workflows/check", json={"definition": BAD.format(name="x-y")})
    body = r.get_json()
    assert r.status_code == 200 and body["valid"] is False
    assert {"path": "tasks[1].depends_on[0]", "line": 8} in [
        {"path": e["path"], "line": e["line"]} for e in body["errors"]]
    r = client.post("/workflows/check", json={"definition": "name: x\ntasks: [\n  {id: a"})
    errors = r.get_json()["errors"]
    assert errors[0]["path"] == "$" and errors[0]["line"] == 3, errors
    ok = client.post("/workflows/check", json={"definition": GOOD.format(name="fine")})
    assert ok.get_json() == {"valid": True, "errors": []}
    assert client.post("/workflows/check", json={"nope": 1}).status_code == 400


def test_edit_diff_and_rollback_through_the_forms(app, world):
    client = login(app, world["users"]["Author"])
    name = unique("flow")
    wid = client.post("/workflows/new", data={
        "team": world["own"]["name"], "definition": GOOD.format(name=name),
    }).headers["Location"].rsplit("/", 1)[1]
    edit = client.get(f"/workflows/{wid}/edit").get_data(as_text=True)
    assert "depends_on: [fetch]" in edit and "saving makes version 2" in edit
    changed = GOOD.format(name=name).replace("Pull new orders", "Pull every order")
    r = client.post(f"/workflows/{wid}/edit", data={"definition": changed})
    assert r.status_code == 302 and "Saved version 2" in client.get(
        r.headers["Location"]).get_data(as_text=True)

    diff = client.get(f"/workflows/{wid}/diff", query_string={"from": 1, "to": 2})
    html = diff.get_data(as_text=True)
    assert diff.status_code == 200
    assert re.search(r'apg-diff-del"><pre>description: Pull new orders</pre>', html)
    assert re.search(r'apg-diff-ins"><pre>description: Pull every order</pre>', html)
    assert client.get(f"/workflows/{wid}/diff?from=1&to=9").status_code == 404

    r = client.post(f"/workflows/{wid}/rollback", data={"version": "1"})
    assert r.status_code == 302
    assert "Rolled back to version 1" in client.get(r.headers["Location"]).get_data(as_text=True)
    rows = versions(app, wid)
    assert [v.version for v in rows] == [1, 2, 3]
    assert rows[2].source == rows[0].source and rows[2].note == "rollback to v1"
    assert last_event(app, target_id=wid).action == "rollback"

    r = client.post(f"/workflows/{wid}/rollback", data={"version": "42"})
    assert r.status_code == 302
    assert "no such version" in client.get(r.headers["Location"]).get_data(as_text=True)
    assert last_event(app, target_id=wid).outcome == "error"

    bad = client.post(f"/workflows/{wid}/edit", data={"definition": "name: x\ntasks: []\n"})
    assert bad.status_code == 422 and 'data-line="2"' in bad.get_data(as_text=True)
    assert len(versions(app, wid)) == 3


def test_delete_through_the_form(app, world):
    client = login(app, world["users"]["Author"])
    name = unique("gone")
    wid = client.post("/workflows/new", data={
        "team": world["own"]["name"], "definition": GOOD.format(name=name),
    }).headers["Location"].rsplit("/", 1)[1]
    r = client.post(f"/workflows/{wid}/delete")
    assert r.status_code == 302 and r.headers["Location"].endswith("/workflows/list/")
    listed = client.get("/workflows/list/").get_data(as_text=True)
    assert "deleted (its versions and runs are kept)" in listed
    assert f'href="/workflows/{wid}"' not in listed
    assert client.get(f"/workflows/{wid}").status_code == 404
    assert last_event(app, target_id=wid).action == "delete"


@pytest.mark.parametrize("role", ["Operator", "Viewer"])
def test_readers_get_403_on_write_routes(app, world, role):
    client = login(app, world["users"][role])
    wid = world["wf"]["own"]["id"]
    assert client.get("/workflows/new").status_code == 403
    assert client.get(f"/workflows/{wid}/edit").status_code == 403
    posts = {
        "/workflows/new": {"team": world["own"]["name"], "definition": GOOD.format(name="x")},
        f"/workflows/{wid}/edit": {"definition": GOOD.format(name="x")},
        f"/workflows/{wid}/rollback": {"version": "1"},
        f"/workflows/{wid}/delete": {},
    }
    for path, data in posts.items():
        assert client.post(path, data=data).status_code == 403, path
        event = last_event(app, actor=world["users"][role]["username"])
        assert event.outcome == "denied", path
    assert len(versions(app, wid)) == 1


def test_author_of_another_team_cannot_change_this_one(app, world):
    client = login(app, world["users"]["Outsider"])
    wid = world["wf"]["own"]["id"]
    assert client.post(f"/workflows/{wid}/rollback", data={"version": "1"}).status_code == 404
    assert client.post(f"/workflows/{wid}/delete").status_code == 404
    r = client.post("/workflows/new", data={
        "team": world["own"]["name"], "definition": GOOD.format(name=unique("sneak"))})
    assert r.status_code == 422 and "No team named" in r.get_data(as_text=True)
    assert last_event(app, actor=world["users"]["Outsider"]["username"]).outcome == "error"
    assert len(versions(app, wid)) == 1


# -- locate() and the diff rows (pure) -----------------------------------------------
YAML_DOC = BAD.format(name="x")
JSON_DOC = json.dumps({"name": "x", "tasks": [
    {"id": "a", "type": "noop"},
    {"id": "b", "type": "http", "with": {"url": 5}, "depends_on": ["a", "q"]},
]}, indent=2)


@pytest.mark.parametrize(("path", "line"), [
    ("name", 1),
    ("tasks", 2),
    ("tasks[0]", 3),
    ("tasks[1].depends_on", 7),
    ("tasks[1].depends_on[0]", 8),
    ("tasks[2].type", 10),
    ("tasks[2].with", 9),        # missing: its task
    ("tasks[7].id", 2),          # no such task: the list
    ("max_active_runs", 1),      # missing at the top: the document
])
def test_locate_yaml(path, line):
    assert locate(YAML_DOC, path, "yaml") == line


def test_locate_json_and_flow_yaml():
    lines = JSON_DOC.splitlines()
    assert lines[locate(JSON_DOC, "tasks[1].depends_on[1]", "json") - 1].strip() == '"q"'
    assert lines[locate(JSON_DOC, "tasks[1].with.url", None) - 1].strip() == '"url": 5'
    flow = "name: x\ntasks: [{id: a, type: noop},\n  {id: b, type: nope}]\n"
    assert locate(flow, "tasks[1].type") == 3


def test_locate_document_errors_and_unreadable_text():
    assert locate(YAML_DOC, "$") is None
    assert locate("a: [", "$", None, "invalid YAML at line 3, column 5: oops") == 3
    assert locate("a: [\n", "tasks[0]") is None
    assert locate("", "name") is None
    issues = [{"path": "tasks[2].type", "message": "unknown"}, {"path": "$", "message": "m"}]
    assert [i["line"] for i in locate_issues(YAML_DOC, issues)] == [10, None]


def test_side_by_side_rows():
    rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n")
    assert [(r.kind, r.old_no, r.new_no) for r in rows] == [
        ("same", 1, 1), ("changed", 2, 2), ("same", 3, 3), ("added", None, 4)]
    assert [r.kind for r in side_by_side("x\ny\n", "y\n")] == ["removed", "same"]
