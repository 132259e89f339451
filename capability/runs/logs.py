"""An attempt's log as it is read (CONNECTORS.md, "Task logs": ``GET
/api/v1/runs/<id>/tasks/<task_id>/logs?attempt=N``).

Three sources make one list of ``{at, level, message}``: the engine's lines, read from
the attempt's row (it started, on which worker; it succeeded, failed (a timeout says
so), was cancelled or lost; whether another attempt follows and when); what its
connector or ``python`` callable wrote, stored with it when it ended (``TaskAttempt.log``) or,
while it runs, the Redis list it is written to (``engine.tasklog``). ``live`` says the
attempt still runs: a reader asks again for more.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from redis import Redis
from sqlalchemy import select

from app.errors import NotFound
from app.extensions import DbSession
from capability.engine import tasklog
from capability.models import (
    AttemptStatus,
    Run,
    TaskAttempt,
    TaskItem,
    TaskKind,
    TaskRun,
)

_ENDED = {
    AttemptStatus.SUCCEEDED: ("info", "succeeded"),
    AttemptStatus.FAILED: ("error", "failed"),
    AttemptStatus.CANCELLED: ("warning", "cancelled"),
    AttemptStatus.LOST: ("error", "lost: its worker stopped before it reported"),
}


def _at(value: dt.datetime | None) -> str:
    return (value or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds")


def _took(attempt: TaskAttempt) -> str:
    if attempt.started_at is None or attempt.finished_at is None:
        return ""
    return f" in {(attempt.finished_at - attempt.started_at).total_seconds():.3f}s"


def _engine_start(attempt: TaskAttempt) -> list[dict[str, Any]]:
    if attempt.started_at is None:
        when = f", not before {_at(attempt.not_before)}" if attempt.not_before else ""
        return [{"at": _at(attempt.created_at), "level": "info",
                 "message": f"attempt {attempt.number} {attempt.status}{when}"}]
    where = f" on {attempt.worker}" if attempt.worker else ""
    return [{"at": _at(attempt.started_at), "level": "info",
             "message": f"attempt {attempt.number} started{where}"}]


def _engine_end(attempt: TaskAttempt, following: TaskAttempt | None) -> list[dict[str, Any]]:
    ended = _ENDED.get(AttemptStatus(attempt.status))
    if ended is None:
        return []
    at = _at(attempt.finished_at)
    level, what = ended
    message = f"{what}{_took(attempt)}"
    if attempt.error and attempt.status != AttemptStatus.SUCCEEDED:
        message += f": {attempt.error}"
    lines = [{"at": at, "level": level, "message": message}]
    if attempt.status in (AttemptStatus.FAILED, AttemptStatus.LOST):
        if following is not None:
            when = following.not_before or following.created_at
            lines.append({"at": at, "level": "info", "message":
                          f"retry: attempt {following.number} not before {_at(when)}"})
        else:
            lines.append({"at": at, "level": "info", "message": "not retried"})
    return lines


def task_log(session: DbSession, redis: Redis, run: Run, task_id: str,
             number: int | None = None, item: int | None = None) -> dict[str, Any]:
    """The log of attempt ``number`` (default: the latest) of task ``task_id`` of ``run``
    (a run the caller may read), or of its element ``item`` for a for_each task.
    ``NotFound`` for a task, element or attempt the run does not have."""
    task = session.execute(select(TaskRun.id).where(
        TaskRun.run_id == run.id, TaskRun.task_id == task_id,
        TaskRun.kind == TaskKind.TASK)).scalar()
    if task is None:
        raise NotFound(f"task {task_id} not found in run {run.id}")
    query = select(TaskAttempt).where(TaskAttempt.task_run_id == task)
    if item is None:
        query = query.where(TaskAttempt.item_id.is_(None))
    else:
        item_id = session.execute(select(TaskItem.id).where(
            TaskItem.task_run_id == task, TaskItem.index == item)).scalar()
        if item_id is None:
            raise NotFound(f"element {item} of task {task_id} not found")
        query = query.where(TaskAttempt.item_id == item_id)
    attempts = list(session.execute(query.order_by(TaskAttempt.number)).scalars())
    out: dict[str, Any] = {"run_id": run.id, "task_id": task_id, "item": item,
                           "attempts": [a.number for a in attempts]}
    if not attempts:
        if number is not None:
            raise NotFound(f"attempt {number} of task {task_id} not found")
        return {**out, "attempt": None, "status": None, "live": False, "lines": [],
                "truncated": 0}
    chosen = attempts[-1] if number is None else next(
        (a for a in attempts if a.number == number), None)
    if chosen is None:
        raise NotFound(f"attempt {number} of task {task_id} not found")
    following = next((a for a in attempts if a.number == chosen.number + 1), None)
    stored = session.execute(select(TaskAttempt.log, TaskAttempt.log_truncated).where(
        TaskAttempt.id == chosen.id)).first()
    live = chosen.status == AttemptStatus.RUNNING
    if stored is not None and stored.log is not None:
        written, truncated = list(stored.log), int(stored.log_truncated or 0)
    elif chosen.started_at is not None:
        # Running: the lines so far. Cancelled: its worker is storing them. Lost: its
        # worker died before it could.
        written, truncated = tasklog.live_lines(redis, chosen.id), 0
    else:
        written, truncated = [], 0
    lines = _engine_start(chosen) + written + _engine_end(chosen, following)
    return {**out, "attempt": chosen.number, "status": chosen.status, "live": live,
            "lines": lines, "truncated": truncated}
