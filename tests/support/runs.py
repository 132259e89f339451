"""Workflows and runs through the API, as the integration tests write them: ``op`` is
a team and the headers of its Author (the ``op`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.extensions import db
from app.runtime.redis_conn import get_redis
from capability.engine import reaper
from capability.engine.dispatch import dispatcher_for
from capability.models import TaskAttempt, TaskRun
from tests.support.app import unique
from tests.support.engine import drain


def make(client, op, tasks: list[dict[str, Any]], **extra: Any) -> str:
    definition = {"name": unique("wf"), "tasks": tasks, **extra}
    r = client.post("/api/v1/workflows/", headers=op["h"],
                    json={"team": op["team"]["name"], "definition": definition})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def start(client, op, wid: str, **body: Any):
    return client.post(f"/api/v1/workflows/{wid}/runs", headers=op["h"], json=body)


def run_to_end(app, client, op, tasks, params=None, **extra) -> dict[str, Any]:
    wid = make(client, op, tasks, **extra)
    r = start(client, op, wid, params=params or {})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["result"]["status"] in ("queued", "running", "succeeded")
    drain(app, r.get_json()["id"])
    got = client.get(f"/api/v1/runs/{r.get_json()['id']}", headers=op["h"]).get_json()["result"]
    got["by_task"] = {t["task_id"]: t for t in got["tasks"]}
    return got


def start_id(client, op, wid: str) -> str:
    r = client.post(f"/api/v1/workflows/{wid}/runs", headers=op["h"], json={})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def get_run(client, op, run_id: str) -> dict[str, Any]:
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    got["by_task"] = {t["task_id"]: t for t in got["tasks"]}
    return dict(got)


def attempts(app, run_id: str, task_id: str) -> list[TaskAttempt]:
    with app.app_context():
        rows = list(db.session.execute(
            select(TaskAttempt).join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
            .where(TaskRun.run_id == run_id, TaskRun.task_id == task_id)
            .order_by(TaskAttempt.number)
        ).scalars())
        for row in rows:
            db.session.expunge(row)
        db.session.remove()
        return rows


def reap_now(app, **kwargs: Any) -> reaper.ReapReport:
    """One pass in the test process, without the grace (the attempts here are fresh)."""
    with app.app_context():
        kwargs.setdefault("grace", 0)
        report = reaper.reap(db.session, get_redis(app), dispatcher_for(app), **kwargs)
        db.session.remove()
        return report


def wait_for(check: Callable[[], Any], timeout: float, what: str = "what was awaited",
             step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout}s")


def finished(client, op, run_id: str) -> dict[str, Any] | None:
    got = get_run(client, op, run_id)
    return got if got["status"] in ("succeeded", "failed", "cancelled") else None


