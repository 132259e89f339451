"""Reading a run fast whatever its size (issue 11, item 19, and large values of item 4):
its JSON and its page in a constant number of statements, a start answered with the
run's summary, elements and attempts paged, large outputs cut with a way to fetch them
whole."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from app.extensions import db
from app.runtime.redis_conn import get_redis
from capability.engine import snapshot
from capability.models import TaskItem, TaskRun
from tests.support.app import Factory
from tests.support.driver import Driver, noop, statements
from tests.support.engine import drain
from tests.support.pages import login
from tests.support.runs import reap_now


def _chain(size: int, elements: int) -> list[dict[str, Any]]:
    """``size`` tasks: a for_each of ``elements`` elements, then a chain of noops."""
    tasks = [noop("each", for_each=list(range(elements)), with_={"value": "{{ item }}"})]
    tasks += [noop(f"t{i}", "each" if i == 1 else f"t{i - 1}") for i in range(1, size)]
    return tasks


def _count(app: Flask, client: FlaskClient, url: str, headers: dict[str, str]) -> int:
    client.get(url, headers=headers)  # warm: the first request loads caches
    with statements(app) as seen:
        r = client.get(url, headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return len(seen)


def test_json_and_page_take_the_same_statements_whatever_the_size(
        app: Flask, client: FlaskClient, author: dict[str, Any], factory: Factory) -> None:
    small = Driver(app, client, author, _chain(5, 3))
    large = Driver(app, client, author, _chain(50, 30))
    assert small.drain() == large.drain() == "succeeded"
    viewer = login(app, factory.user("Viewer", teams=[author["team"]]))
    api = [_count(app, client, f"/api/v1/runs/{d.run_id}", author["h"]) for d in (small, large)]
    page = [_count(app, viewer, f"/runs/{d.run_id}", {}) for d in (small, large)]
    assert api[0] == api[1], api
    assert page[0] == page[1], page


def test_start_answers_with_the_summary(client: FlaskClient, author: dict[str, Any]) -> None:
    r = client.post("/api/v1/workflows/", headers=author["h"], json={
        "team": author["team"]["name"],
        "definition": {"name": "summary", "tasks": _chain(4, 2)}})
    r = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs", headers=author["h"],
                    json={})
    assert r.status_code == 201
    result = r.get_json()["result"]
    assert result["status"] == "queued" and "tasks" not in result
    assert sum(result["task_counts"].values()) == 4
    for name in ("id", "workflow_id", "workflow_version", "params", "trigger", "created_at",
                 "started_at", "finished_at", "controls"):
        assert name in result


def test_elements_and_attempts_are_paged(
        app: Flask, client: FlaskClient, author: dict[str, Any], factory: Factory) -> None:
    run = Driver(app, client, author, _chain(2, 250))
    assert run.drain() == "succeeded"
    got = client.get(f"/api/v1/runs/{run.run_id}", headers=author["h"]).get_json()["result"]
    each = got["tasks"][0]
    assert len(each["items"]) == snapshot.PAGE and each["items_total"] == 250
    assert each["item_counts"] == {"succeeded": 250}
    assert len(each["attempt_history"]) == snapshot.PAGE
    assert each["attempt_history_total"] == 250 == each["attempts"]
    assert len(each["output"]) == 250  # the task's own output is whole (under the cap)
    # The rest, a page at a time.
    more = client.get(f"/api/v1/runs/{run.run_id}/tasks/each?items_offset=200&items_limit=100"
                      "&attempts_offset=240", headers=author["h"]).get_json()["result"]
    assert [i["index"] for i in more["items"]] == list(range(200, 250))
    assert [a["item"] for a in more["attempt_history"]] == list(range(240, 250))
    # Live updates and the page carry the first page with the totals.
    viewer = login(app, factory.user("Viewer", teams=[author["team"]]))
    page = viewer.get(f"/runs/{run.run_id}?task=each").get_data(as_text=True)
    assert page.count('title="item ') == snapshot.PAGE
    assert 'data-more="items"' in page and "Load more items" in page
    assert '<span class="apg-items-count">250</span>' in page


def test_bad_pages_and_unknown_tasks(
        app: Flask, client: FlaskClient, author: dict[str, Any]) -> None:
    run = Driver(app, client, author, _chain(1, 2))
    base = f"/api/v1/runs/{run.run_id}"
    for query, path in (("items_limit=-1", "items_limit"), ("attempts_offset=x", "attempts_offset"),
                        ("items_limit=5000", "items_limit")):
        r = client.get(f"{base}?{query}", headers=author["h"])
        assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == path, r.get_json()
    assert client.get(f"{base}/tasks/nope", headers=author["h"]).status_code == 404
    assert client.get(f"{base}/tasks/nope/output", headers=author["h"]).status_code == 404
    assert client.get(f"{base}/tasks/each/output?item=-2",
                      headers=author["h"]).status_code == 422


def test_large_outputs_are_cut_and_fetched_whole(
        app: Flask, client: FlaskClient, author: dict[str, Any], factory: Factory,
        monkeypatch: Any) -> None:
    monkeypatch.setitem(app.config, "API_VALUE_MAX_CHARS", 1000)
    big = "x" * 5000
    run = Driver(app, client, author, [
        noop("big", with_={"value": big}),
        noop("each", "big", for_each=[1, 2], with_={"value": "{{ tasks.big.output }}"}),
        noop("small", "big", with_={"value": "ok"}),
    ])
    assert run.drain() == "succeeded"
    got = client.get(f"/api/v1/runs/{run.run_id}", headers=author["h"]).get_json()["result"]
    by = {t["task_id"]: t for t in got["tasks"]}
    cut = by["big"]["output_cut"]
    assert by["big"]["output"] is None and cut["size"] == len(big) + 2  # its JSON: quoted
    assert cut["preview"] == ('"' + big)[:snapshot.PREVIEW]
    assert cut["href"] == f"/api/v1/runs/{run.run_id}/tasks/big/output"
    assert by["small"]["output"] == "ok" and "output_cut" not in by["small"]
    element = by["each"]["items"][1]
    assert element["output"] is None and element["output_cut"]["href"].endswith("?item=1")
    whole = client.get(cut["href"], headers=author["h"]).get_json()["result"]
    assert whole["output"] == big
    one = client.get(element["output_cut"]["href"], headers=author["h"]).get_json()["result"]
    assert (one["item"], one["output"]) == (1, big)
    viewer = login(app, factory.user("Viewer", teams=[author["team"]]))
    page = viewer.get(f"/runs/{run.run_id}?task=big").get_data(as_text=True)
    assert big not in page and "&#34;" + big[:snapshot.PREVIEW - 1] + "\u2026" in page
    assert f'href="/api/v1/runs/{run.run_id}/tasks/big/output"' in page
    assert viewer.get(f"/api/v1/runs/{run.run_id}/tasks/big/output").get_json()[
        "result"]["output"] == big


def test_a_start_creates_no_elements(app: Flask, client: FlaskClient,
                                     author: dict[str, Any]) -> None:
    """A for_each with thousands of elements: the request that starts the run creates
    none of them (a worker does, and the run still succeeds)."""
    run = Driver(app, client, author, [
        noop("each", for_each=list(range(3000)), with_={"value": "{{ item }}"})])
    assert _elements(app, run.run_id) == 0
    assert len(run.fifo.items) == 1  # the job that makes them
    run.step()
    assert _elements(app, run.run_id) == 3000
    assert run.drain() == "succeeded"
    output = run.tasks()["each"].output
    assert output == list(range(3000))


def _elements(app: Flask, run_id: str) -> int:
    with app.app_context():
        made = db.session.execute(
            select(func.count()).select_from(TaskItem).join(TaskRun)
            .where(TaskRun.run_id == run_id)).scalar()
        db.session.remove()
    return int(made or 0)


def test_a_lost_expansion_is_sent_again(app: Flask, client: FlaskClient,
                                        author: dict[str, Any]) -> None:
    """The job that makes the elements is an attempt like any other: lost with Redis,
    the reaper sends it again and the elements are made once."""
    r = client.post("/api/v1/workflows/", headers=author["h"], json={
        "team": author["team"]["name"],
        "definition": {"name": "lost-expansion", "tasks": _chain(2, 4)}})
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=author["h"], json={}).get_json()["id"]
    get_redis(app).flushdb()  # the job is gone; its attempt is still queued
    report = reap_now(app)
    assert report.resent >= 1  # (and queued attempts of earlier tests)
    assert drain(app, run_id) == "succeeded"
    assert _elements(app, run_id) == 4


def test_a_start_makes_objects_for_its_first_tasks_only(
        app: Flask, client: FlaskClient, author: dict[str, Any]) -> None:
    """A 60-task DAG (a root, 58 leaves, a join): the start writes every task row but
    makes an ORM object for the root only (the others are one multi-row INSERT), and the
    run then goes on as before."""
    leaves = [f"l{i}" for i in range(58)]
    made: list[str] = []

    def count(_target: TaskRun, _args: Any, kwargs: dict[str, Any]) -> None:
        made.append(kwargs["task_id"])

    event.listen(TaskRun, "init", count)
    try:
        run = Driver(app, client, author, [
            noop("root"), *(noop(leaf, "root") for leaf in leaves), noop("join", *leaves)])
    finally:
        event.remove(TaskRun, "init", count)
    assert made == ["root"]
    tasks = run.tasks()
    assert len(tasks) == 60 and tasks["root"].status == "queued"
    assert {t.status for i, t in tasks.items() if i != "root"} == {"pending"}
    assert run.drain() == "succeeded"


def test_a_first_task_skipped_by_its_worker_decides_the_rest(
        app: Flask, client: FlaskClient, author: dict[str, Any]) -> None:
    """A first task whose ``when`` is false (here a for_each's, evaluated by the worker
    that begins it, never at the start): its downstream rows, made in bulk at the start,
    are decided when it is skipped."""
    run = Driver(app, client, author, [
        noop("gate", for_each=[1, 2], when="{{ false }}"), noop("next", "gate"),
        noop("other")])
    tasks = run.tasks()
    assert (tasks["gate"].status, tasks["next"].status) == ("queued", "pending")
    assert tasks["other"].status == "queued"
    assert run.drain() == "succeeded"
    tasks = run.tasks()
    assert tasks["gate"].status == "skipped"
    assert tasks["next"].status == "skipped"  # all_success over a skipped upstream
    assert tasks["other"].status == "succeeded"


def test_a_run_without_elements_skips_their_statements(
        app: Flask, client: FlaskClient, author: dict[str, Any]) -> None:
    """A run with no for_each task has no elements: its JSON reads the tasks and their
    attempts only (the attempts' outer join is the one mention of elements)."""
    run = Driver(app, client, author, [noop("a"), noop("b", "a")])
    assert run.drain() == "succeeded"
    client.get(f"/api/v1/runs/{run.run_id}", headers=author["h"])
    with statements(app) as seen:
        r = client.get(f"/api/v1/runs/{run.run_id}", headers=author["h"])
    assert r.status_code == 200 and r.get_json()["result"]["tasks"][0]["items_total"] == 0
    assert sum("apg_task_item" in s for s in seen) == 1
