"""Run pages (the FAB UI): the runs list, a run's page (graph, timeline data, tasks,
controls), the failed tasks, the "Run" form of a workflow's page; who sees what."""

from __future__ import annotations

import html as htmllib
import json
import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.ids import short_id
from app.times import seconds_text
from capability.models import Run
from capability.runs import graph as run_graph
from tests.support.app import api_token, auth, unique
from tests.support.engine import drain, run_status, work_once
from tests.support.pages import APPROVAL, DIAMOND, login, make_workflow, start

MEMBERS = ["Author", "Operator", "Viewer"]
FAILING = [
    {"id": "first", "type": "noop"},
    {"id": "boom", "type": "fail", "depends_on": ["first"], "with": {"message": "it broke"}},
    {"id": "after", "type": "noop", "depends_on": ["boom"]},
]
PARAMS = {
    "count": {"type": "integer", "required": True, "description": "how many"},
    "ratio": {"type": "number", "default": 0.5},
    "dry_run": {"type": "boolean", "default": True},
    "label": {"type": "string", "default": "nightly"},
    "options": {"type": "object"},
    "items": {"type": "array", "default": [1, 2]},
    "mode": {"type": "string", "enum": ["fast", "safe"], "default": "safe"},
}


def own_workflow(app: Flask, world: dict[str, Any], tasks: list[dict[str, Any]],
                 **extra: Any) -> str:
    """A workflow of the own team, made through the API by its Author (a client of its own:
    a session login would win over the token)."""
    return make_workflow(app.test_client(), world["h"], world["own"]["name"], tasks, **extra)


def events(app: Flask, run_id: str, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.execute(
            select(AuditEvent).where(AuditEvent.target_id == run_id, AuditEvent.action == action)
            .order_by(AuditEvent.seq)).scalars())
        db.session.expunge_all()
    return rows


def task_statuses(app: Flask, run_id: str) -> dict[str, str]:
    with app.app_context():
        run = db.session.get(Run, run_id)
        result = {t.task_id: t.status for t in run.tasks}
        db.session.remove()
    return result


def graph_of(page: str, svg_id: str) -> dict[str, Any]:
    match = re.search(rf'<svg[^>]*id="{svg_id}" data-graph=\'([^\']*)\'', page)
    assert match, f"no data-graph on #{svg_id}"
    return dict(json.loads(htmllib.unescape(match.group(1))))


def state_of(page: str) -> dict[str, Any]:
    match = re.search(r"data-state='([^']*)'", page)
    assert match, "no data-state on the page"
    return dict(json.loads(htmllib.unescape(match.group(1))))


@pytest.fixture(scope="module")
def world(app: Flask) -> dict[str, Any]:
    from tests.support.app import Factory

    f = Factory(app)
    own, other = f.team(), f.team()
    users = {role: f.user(role, teams=[own]) for role in [*MEMBERS, "Auditor"]}
    users["Admin"] = f.user("Admin")
    users["Outsider"] = f.user("Operator", teams=[other])
    client = app.test_client()
    author = auth(api_token(client, users["Author"]["username"]))
    outsider = auth(api_token(client, f.user("Author", teams=[other])["username"]))
    diamond = make_workflow(client, author, own["name"], DIAMOND)
    run = start(client, author, diamond)
    assert drain(app, run) == "succeeded"
    other_wf = make_workflow(client, outsider, other["name"], DIAMOND)
    other_run = start(client, outsider, other_wf)
    return {"own": own, "other": other, "users": users, "h": author, "diamond": diamond,
            "run": run, "other_run": other_run, "other_wf": other_wf}


# -- who sees what -------------------------------------------------------------------
READ_PAGES = ["/runs/list/", "/runs/{run}", "/failed_tasks/list/"]


@pytest.mark.parametrize("role", ["Admin", *MEMBERS, "Auditor"])
@pytest.mark.parametrize("path", READ_PAGES)
def test_read_pages_by_role(app, world, role, path):
    client = login(app, world["users"][role])
    r = client.get(path.format(run=world["run"]))
    assert r.status_code == (403 if role == "Auditor" else 200), r.get_data(as_text=True)[:300]


@pytest.mark.parametrize("role", MEMBERS)
def test_another_teams_run_is_not_found(app, world, role):
    client = login(app, world["users"][role])
    r = client.get(f"/runs/{world['other_run']}")
    assert r.status_code == 404 and 'id="error-404"' in r.get_data(as_text=True)
    r = client.post(f"/runs/{world['other_run']}/control/cancel")
    assert r.status_code == (403 if role == "Viewer" else 404)
    assert run_status(app, world["other_run"]) != "cancelled"


def test_list_shows_own_runs_with_status_duration_and_links(app, world):
    client = login(app, world["users"]["Viewer"])
    page = client.get("/runs/list/").get_data(as_text=True)
    assert f'href="/runs/{world["run"]}"' in page
    assert world["other_run"] not in page
    row = re.search(rf'<tr class="apg-run-row[^>]*/runs/{world["run"]}".*?</tr>', page, re.S)
    assert row, page[:2000]
    assert "apg-st-succeeded" in row.group(0) and re.search(r"\d+(\.\d)? m?s", row.group(0))
    assert "manual" not in row.group(0) and "api" in row.group(0)
    found = client.get("/runs/list/", query_string={"_flt_0_workflow": world["diamond"]})
    assert world["run"] in found.get_data(as_text=True)
    none = client.get("/runs/list/", query_string={"_flt_0_status": "failed",
                                                    "_flt_0_workflow": world["diamond"]})
    assert world["run"] not in none.get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    # Sub-workflow runs (trigger "workflow") can be searched for too.
    assert r'\u003coption value=\"workflow\"\u003eworkflow' in page  # the filter's JSON
    wanted = client.get("/runs/list/", query_string={"_flt_0_trigger": "workflow",
                                                     "_flt_0_workflow": world["diamond"]})
    assert wanted.status_code == 200 and world["run"] not in wanted.get_data(as_text=True)


def test_runs_started_together_have_different_short_ids(app, world):
    """UUIDv7 ids begin with their time: runs started in the same minute (the same 65 s
    window) share their first 8 characters, so the short id is the random tail."""
    wid = own_workflow(app, world, DIAMOND[:1])
    client = app.test_client()
    runs: list[str] = []
    for _ in range(2):  # a window's edge can fall between three starts, not twice running
        runs = [start(client, world["h"], wid) for _ in range(3)]
        if len({r[:8] for r in runs}) == 1:
            break
    assert len({r[:8] for r in runs}) == 1, runs
    viewer = login(app, world["users"]["Viewer"])
    page = viewer.get("/runs/list/", query_string={"_flt_0_workflow": wid}).get_data(as_text=True)
    shown = re.findall(r'href="/runs/([0-9a-f-]{36})"><code>([0-9a-f]+)</code>', page)
    assert sorted(shown) == sorted((r, short_id(r)) for r in runs)
    assert len({code for _, code in shown}) == len(shown) == 3
    assert all(short_id(r) == r[-8:] for r in runs)
    for run in runs:
        assert drain(app, run) == "succeeded"
    # The run's own page names it by the same short id.
    one = viewer.get(f"/runs/{runs[0]}").get_data(as_text=True)
    assert f'<li class="active">run {runs[0][-8:]}</li>' in one
    assert f"<title>Run {runs[0][-8:]} ·" in one


def test_page_draws_graph_timeline_data_and_tasks(app, world):
    client = login(app, world["users"]["Viewer"])
    page = client.get(f"/runs/{world['run']}").get_data(as_text=True)
    graph = graph_of(page, "run-graph")
    assert [(n["id"], n["type"], n["status"]) for n in graph["nodes"]] == [
        (t["id"], "noop", "succeeded") for t in DIAMOND]
    assert sorted(map(tuple, graph["edges"])) == [("fetch", "left"), ("fetch", "right"),
                                                  ("left", "join"), ("right", "join")]
    assert "vendor/dagre/dagre.min.js" in page and "js/graph.js" in page
    state = state_of(page)
    assert state["status"] == "succeeded" and len(state["tasks"]) == 4
    assert all(t["attempt_history"][0]["started_at"] for t in state["tasks"])
    assert "output" not in json.dumps(state) and "params" not in state
    assert '&#34;orders&#34;: [' in page  # fetch's output, pretty printed in its panel
    assert 'id="timeline"' in page and "vendor/socket.io/socket.io.min.js" in page
    assert "js/run_page.js" in page and not re.search(r"<script(?![^>]*src=)[^>]*>\s*\S", page)
    assert 'id="run-controls"' not in page  # a Viewer has no buttons


def test_page_of_a_run_with_items_and_compensations(app, world):
    tasks = [
        {"id": "book", "type": "noop", "compensate": {"type": "noop", "with": {"value": "undo"}}},
        {"id": "each", "type": "noop", "depends_on": ["book"], "for_each": [1, 2, 3],
         "with": {"value": "{{ item * 10 }}"}},
        {"id": "boom", "type": "fail", "depends_on": ["each"], "with": {"message": "nope"}},
    ]
    run = start(app.test_client(), world["h"], own_workflow(app, world, tasks))
    assert drain(app, run) == "failed"
    viewer = login(app, world["users"]["Viewer"])
    r = viewer.get(f"/runs/{run}?task=each")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    panel = re.search(r'id="task-each".*?<div class="apg-help-label">Output', page, re.S).group(0)
    assert len(re.findall(r'class="label apg-status apg-st-succeeded" title="item \d', panel)) == 3
    assert re.search(r'<div class="panel panel-default" id="compensations"\s*>', page)
    state = state_of(page)
    assert [c["task_id"] for c in state["compensations"]] == ["book"]
    assert [i["index"] for i in state["tasks"][1]["items"]] == [0, 1, 2]
    nodes = {n["id"]: n for n in graph_of(page, "run-graph")["nodes"]}
    assert (nodes["each"]["for_each"], nodes["each"]["items"]) == (True, 3)
    assert (nodes["book"]["for_each"], nodes["book"]["items"]) == (False, None)
    failed = login(app, world["users"]["Operator"]).get("/failed_tasks/list/")
    assert f'data-run="{run}" data-task="boom"' in failed.get_data(as_text=True)


# -- controls -----------------------------------------------------------------------
@pytest.mark.parametrize("role", ["Admin", "Author", "Operator", "Viewer"])
def test_buttons_only_for_those_who_may_control(app, world, role):
    client = login(app, world["users"][role])
    run = start(app.test_client(), world["h"], own_workflow(app, world, APPROVAL))
    work_once(app)
    page = client.get(f"/runs/{run}").get_data(as_text=True)
    allowed = role != "Viewer"
    assert ('id="run-controls"' in page) is allowed
    assert ('class="apg-approval-form"' in page) is allowed
    assert ('id="run-pause"' in page) is allowed
    workflow_page = client.get(f"/workflows/{world['diamond']}").get_data(as_text=True)
    assert ('id="run-form"' in workflow_page) is allowed
    assert ('id="run-workflow"' in workflow_page) is allowed


def test_controls_through_the_form_work_and_are_audited(app, world):
    operator = login(app, world["users"]["Operator"])
    run = start(app.test_client(), world["h"], own_workflow(app, world, APPROVAL))
    work_once(app)
    assert task_statuses(app, run)["ask"] == "waiting_approval"
    page = operator.get(f"/runs/{run}").get_data(as_text=True)
    # The forms of the controls the run allows now (run_dict's "controls") are shown.
    assert re.search(r'<form[^>]*/control/pause"[^>]*data-action="pause"\s*>', page)
    assert re.search(r'<form[^>]*/control/resume"[^>]*data-action="resume"\s*hidden>', page)

    r = operator.post(f"/runs/{run}/control/pause")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/runs/{run}")
    assert run_status(app, run) == "paused"
    assert f"Run {run[-8:]} paused" in operator.get(r.headers["Location"]).get_data(as_text=True)
    (event,) = events(app, run, "pause")
    assert event.outcome == "success" and event.actor == world["users"]["Operator"]["username"]

    r = operator.post(f"/runs/{run}/control/pause", follow_redirects=True)  # not running now
    assert "only a running or starting run can be paused" in r.get_data(as_text=True)
    assert [e.outcome for e in events(app, run, "pause")] == ["success", "error"]

    assert operator.post(f"/runs/{run}/control/resume").status_code == 302
    assert run_status(app, run) == "running"
    r = operator.post(f"/runs/{run}/tasks/ask/answer",
                      data={"decision": "approve", "comment": "looks good"})
    assert r.status_code == 302 and "task=ask" in r.headers["Location"]
    assert drain(app, run) == "succeeded"
    (approve,) = events(app, run, "approve")
    assert approve.after["comment"] == "looks good"
    assert operator.post(f"/runs/{run}/control/explode").status_code == 404


def test_cancel_and_retry_from_the_failed_tasks_list(app, world):
    operator = login(app, world["users"]["Operator"])
    run = start(app.test_client(), world["h"], own_workflow(app, world, FAILING))
    assert drain(app, run) == "failed"
    listing = operator.get("/failed_tasks/list/").get_data(as_text=True)
    row = re.search(rf'<tr class="apg-failed-row" data-run="{run}" data-task="boom">.*?</tr>',
                    listing, re.S)
    assert row, listing[:3000]
    assert "it broke" in row.group(0) and "apg-retry-run" in row.group(0)
    assert f"<code>{run[-8:]}</code>" in row.group(0)  # the short id: the random tail
    viewer = login(app, world["users"]["Viewer"]).get("/failed_tasks/list/")
    assert run in viewer.get_data(as_text=True)
    assert "apg-retry-run" not in viewer.get_data(as_text=True)

    r = operator.post(f"/runs/{run}/control/retry", data={"next": "/failed_tasks/list/"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/failed_tasks/list/")
    back = operator.get(r.headers["Location"]).get_data(as_text=True)
    assert f"Run {run[-8:]}: failed tasks queued again." in back  # which run, of the list
    assert run_status(app, run) == "queued"  # running again once a worker begins a task
    assert events(app, run, "retry")[0].outcome == "success"
    assert drain(app, run) == "failed"
    r = operator.post(f"/runs/{run}/control/retry", data={"next": "https://evil.example/"})
    assert r.headers["Location"].endswith(f"/runs/{run}")


# -- the Run form of a workflow's page -----------------------------------------------
def runs_of(app: Flask, wid: str) -> int:
    with app.app_context():
        count = db.session.execute(
            select(func.count()).select_from(Run).where(Run.workflow_id == wid)).scalar()
        db.session.remove()
    return int(count or 0)


def test_run_form_fields_follow_the_declared_params(app, world):
    author = login(app, world["users"]["Author"])
    wid = own_workflow(app, world, DIAMOND, params=PARAMS)
    page = author.get(f"/workflows/{wid}").get_data(as_text=True)
    form = re.search(r'<form[^>]*id="run-form".*?</form>', page, re.S).group(0)
    assert re.search(r'<input[^>]*name="param.count"[^>]*type="number"[^>]*step="1"', form, re.S)
    assert 'for="param-count">count <span class="apg-required"' in form
    assert re.search(r'name="param.ratio" value="0.5"\s+type="number"', form)
    assert re.search(r'type="checkbox" id="param-dry_run" name="param.dry_run" checked', form)
    assert re.search(r'name="param.label" value="nightly"', form)
    assert re.search(r'<textarea[^>]*name="param.items"[^>]*>\[\s*1,\s*2\s*\]</textarea>', form)
    assert re.search(r'<option value="&#34;safe&#34;" selected>safe</option>', form)


def test_run_form_with_bad_params_shows_errors_and_starts_nothing(app, world):
    author = login(app, world["users"]["Author"])
    wid = own_workflow(app, world, DIAMOND, params=PARAMS)
    r = author.post(f"/workflows/{wid}/run", data={
        "param.count": "many", "param.options": "{not json", "param.items": "[1]"})
    assert r.status_code == 422
    page = r.get_data(as_text=True)
    assert re.search(r'id="param-count-error">must be a whole number', page)
    assert re.search(r'id="param-options-error">not valid JSON', page)
    assert 'class="collapse in" id="run-panel"' in page
    assert "{not json" in page  # what was typed is kept
    assert runs_of(app, wid) == 0
    with app.app_context():
        event = db.session.execute(select(AuditEvent).where(
            AuditEvent.action == "start", AuditEvent.target_id == wid)).scalars().first()
        assert event is not None and event.outcome == "error"
        db.session.remove()
    r = author.post(f"/workflows/{wid}/run", data={})  # count is required
    assert r.status_code == 422 and 'id="param-count-error">parameter required' in r.get_data(
        as_text=True)


def test_run_form_starts_a_manual_run_and_opens_its_page(app, world):
    operator = login(app, world["users"]["Operator"])
    wid = own_workflow(app, world, DIAMOND, params=PARAMS)
    key = unique("key")
    data = {"param.count": "3", "param.options": '{"a": 1}', "param.items": "[]",
            "param.mode": '"fast"', "param.label": "", "idempotency_key": key}
    r = operator.post(f"/workflows/{wid}/run", data=data)
    assert r.status_code == 302, r.get_data(as_text=True)[:2000]
    run_id = r.headers["Location"].rsplit("/", 1)[-1]
    with app.app_context():
        run = db.session.get(Run, run_id)
        assert run.trigger == "manual" and run.idempotency_key == key
        assert run.created_by == world["users"]["Operator"]["username"]
        assert run.params == {"count": 3, "ratio": 0.5, "dry_run": False, "label": "nightly",
                              "options": {"a": 1}, "items": [], "mode": "fast"}
        db.session.remove()
    assert f"Run {run_id[-8:]} started." in operator.get(r.headers["Location"]).get_data(
        as_text=True)
    again = operator.post(f"/workflows/{wid}/run", data=data)
    assert again.headers["Location"] == r.headers["Location"] and runs_of(app, wid) == 1
    assert drain(app, run_id) == "succeeded"
    viewer = login(app, world["users"]["Viewer"])
    assert viewer.post(f"/workflows/{wid}/run", data=data).status_code == 403
    outsider = login(app, world["users"]["Outsider"])
    assert outsider.post(f"/workflows/{wid}/run", data=data).status_code == 404


# -- the graph's data ------------------------------------------------------------------
def test_graph_data_of_a_definition_and_of_a_run():
    from capability import dsl

    result = dsl.validate_definition({"name": "g", "tasks": [
        {"id": "a", "type": "noop", "for_each": [1, 2, 3]},
        {"id": "b", "type": "noop", "depends_on": ["a"]},
        {"id": "c", "type": "noop", "depends_on": ["a"], "for_each": "{{ tasks.a.output }}"},
        {"id": "d", "type": "noop", "depends_on": ["b", "c"]},
    ]})
    assert result.definition is not None, result.errors
    plain = run_graph.graph_data(result.definition)
    assert [(n["id"], n["status"], n["for_each"], n["items"]) for n in plain["nodes"]] == [
        ("a", None, True, 3), ("b", None, False, None), ("c", None, True, None),
        ("d", None, False, None)]
    assert plain["edges"] == [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]]
    # A run's: statuses, and the elements that exist so far (c's list is not made yet).
    tasks = {"a": {"status": "succeeded", "items": [{"index": 0}, {"index": 1}]},
             "b": {"status": "running", "items": []}, "c": {"status": "pending", "items": []}}
    ran = {n["id"]: n for n in run_graph.graph_data(result.definition, tasks)["nodes"]}
    assert (ran["a"]["status"], ran["a"]["items"]) == ("succeeded", 2)
    assert (ran["c"]["status"], ran["c"]["items"]) == ("pending", 0)
    assert (ran["b"]["items"], ran["d"]["status"]) == (None, "pending")
    assert seconds_text(0.25) == "250 ms" and seconds_text(75) == "1 min 15 s"
