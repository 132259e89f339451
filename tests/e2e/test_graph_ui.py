"""End-to-end: the task graph drawn in the browser (static/js/graph.js, laid out by the
vendored dagre) on a workflow's page before any run, then on a run's page where it
follows the run live: statuses, and the element count of for_each tasks. Edges must go
around the boxes, never through them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.app import api_token, auth, quiet_socketio_listener, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, settle
from tests.support.engine import drain

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def _quiet_listener() -> Iterator[None]:
    yield
    quiet_socketio_listener()


LONG = "tell_the_regional_warehouse_operations_team_about_the_new_orders"[:63]
# Long edges on purpose: extract -> load and validate -> report skip ranks, so a drawing
# that joins boxes by straight lines or plain curves would cross the boxes between.
TASKS = [
    {"id": "extract", "type": "noop", "with": {"value": list(range(12))}},
    {"id": "validate", "type": "noop", "depends_on": ["extract"]},
    {"id": "enrich", "type": "noop", "depends_on": ["validate"]},
    {"id": "each_order", "type": "noop", "depends_on": ["enrich"],
     "for_each": "{{ tasks.extract.output }}", "with": {"value": "{{ item * 2 }}"}},
    {"id": "load", "type": "transform", "depends_on": ["each_order", "extract"],
     "with": {"value": "{{ tasks.each_order.output | length }}"}},
    {"id": "report", "type": "noop", "depends_on": ["load", "validate"]},
    {"id": "notify_regions", "type": "noop", "depends_on": ["extract"],
     "for_each": ["eu-west", "us-east", "ap-south"]},
    {"id": LONG, "type": "noop", "depends_on": ["extract"]},
]

GEOMETRY = """svg => {
  const boxes = Array.from(svg.querySelectorAll('.apg-node')).map(g => {
    const m = g.transform.baseVal.consolidate().matrix;
    const r = g.querySelector('.apg-node-box');
    return {id: g.getAttribute('data-task'), x: m.e, y: m.f,
            w: r.width.baseVal.value, h: r.height.baseVal.value};
  });
  const byId = Object.fromEntries(boxes.map(b => [b.id, b]));
  const crossings = [], backwards = [], overlaps = [];
  const edges = Array.from(svg.querySelectorAll('.apg-edge'));
  edges.forEach(p => {
    const from = p.getAttribute('data-from'), to = p.getAttribute('data-to');
    if (byId[from].x + byId[from].w > byId[to].x) backwards.push(from + '->' + to);
    const length = p.getTotalLength();
    for (let s = 0; s <= length; s += 3) {
      const pt = p.getPointAtLength(s);
      boxes.forEach(b => {
        if (b.id === from || b.id === to) return;
        if (pt.x > b.x && pt.x < b.x + b.w && pt.y > b.y && pt.y < b.y + b.h) {
          crossings.push(from + '->' + to + ' crosses ' + b.id);
        }
      });
    }
  });
  boxes.forEach(a => boxes.forEach(b => {
    if (a.id < b.id && a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) {
      overlaps.push(a.id + '/' + b.id);
    }
  }));
  return {nodes: boxes.length, edges: edges.length, crossings: [...new Set(crossings)],
          backwards: backwards, overlaps: overlaps,
          width: svg.getBoundingClientRect().width};
}"""


def node_text(page: Any, svg: str, task: str, part: str) -> str:
    return str(page.locator(f'{svg} .apg-node[data-task="{task}"] {part}').text_content())


def test_graph_of_a_workflow_and_of_its_run(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("order-pipeline"), "tasks": TASKS}})
    assert r.status_code == 201, r.get_json()
    wid = r.get_json()["id"]

    # The workflow's page: the definition's graph, no run yet, so no status colours.
    login(page, author["username"], author["password"])
    page.goto(f"/workflows/{wid}")
    svg = page.locator("#workflow-graph")
    svg.locator(".apg-node").first.wait_for()
    shape = svg.evaluate(GEOMETRY)
    assert (shape["nodes"], shape["edges"]) == (8, 9), shape
    assert shape["crossings"] == [] and shape["backwards"] == [] and shape["overlaps"] == [], shape
    assert svg.locator(".apg-node.apg-node-static").count() == 8
    assert svg.locator('.apg-node[class*="apg-st-"]').count() == 0
    assert svg.locator(".apg-node[tabindex]").count() == 0  # nothing to open here
    assert node_text(page, "#workflow-graph", "each_order", ".apg-node-items") == "for_each"
    assert node_text(page, "#workflow-graph", "notify_regions", ".apg-node-items") == (
        "for_each \u00b7 3 items")
    assert node_text(page, "#workflow-graph", "load", ".apg-node-meta") == "transform"
    # A long id is cut to the widest box; the tooltip has all of it.
    shown = node_text(page, "#workflow-graph", LONG, ".apg-node-id")
    assert shown.endswith("\u2026") and LONG.startswith(shown[:-1]) and len(shown) > 20
    assert node_text(page, "#workflow-graph", LONG, "title") == f"{LONG} (noop)"
    width = svg.locator(f'.apg-node[data-task="{LONG}"] .apg-node-box').get_attribute("width")
    assert float(width or 0) <= 280
    settle(page)
    page.locator("#workflow-graph-panel").screenshot(path=str(screenshots / "workflow_graph.png"))

    # A run of it: extract waits for a worker, the rest for their upstreams; each_order has
    # no elements until the run makes them.
    run_id = client.post(f"/api/v1/workflows/{wid}/runs", headers=headers).get_json()["id"]
    page.goto(f"/runs/{run_id}")
    assert page.locator("#run-short-id").inner_text() == run_id[-8:]
    assert page.locator(".apg-breadcrumb .active").inner_text() == f"run {run_id[-8:]}"
    page.locator("#live-indicator", has_text="live").wait_for()
    svg = page.locator("#run-graph")
    assert svg.locator(".apg-node.apg-st-pending").count() == 7
    assert svg.locator('.apg-node.apg-st-queued[data-task="extract"]').count() == 1
    assert node_text(page, "#run-graph", "each_order", ".apg-node-items") == "for_each"
    assert node_text(page, "#run-graph", "load", ".apg-node-meta") == "transform \u00b7 pending"
    page.evaluate("window.apgNoReload = 'still here'")

    assert drain(app, run_id) == "succeeded"
    svg.locator(".apg-node.apg-st-succeeded").nth(7).wait_for(timeout=8000)
    items = svg.locator('.apg-node[data-task="each_order"] .apg-node-items')
    items.filter(has_text="for_each \u00b7 12 items").wait_for()
    assert node_text(page, "#run-graph", "notify_regions", ".apg-node-items") == (
        "for_each \u00b7 3 items")
    assert "each_order (noop): succeeded, for_each \u00b7 12 items" == node_text(
        page, "#run-graph", "each_order", "title")
    assert page.evaluate("window.apgNoReload") == "still here"  # live, not reloaded
    shape = svg.evaluate(GEOMETRY)
    assert (shape["nodes"], shape["edges"]) == (8, 9), shape
    assert shape["crossings"] == [] and shape["backwards"] == [] and shape["overlaps"] == [], shape

    # Click and keyboard open a task's panel.
    svg.locator('.apg-node[data-task="load"]').click()
    assert page.locator("#task-load").is_visible() and not page.locator("#task-report").is_visible()
    svg.locator('.apg-node[data-task="report"]').focus()
    page.keyboard.press("Enter")
    assert page.locator("#task-report").is_visible() and not page.locator("#task-load").is_visible()
    assert "apg-selected" in (svg.locator('.apg-node[data-task="report"]').get_attribute("class")
                              or "")
    assert page.url.endswith("?task=report")
    settle(page)
    page.locator(".apg-graph-panel").screenshot(path=str(screenshots / "run_graph.png"))
    assert_no_csp_errors(console)
    errors = [e for e in console.errors if "favicon.ico" not in e]
    assert not errors, errors
