"""Log lines for operators: a run started, a run finished.

``run 01J... started: workflow 'nightly' v3, api by alice`` and
``run 01J... finished: succeeded in 12.3s (workflow 'nightly' v3)``, at INFO; a failed
run at WARNING, with the error of its first failed task. They come from SQLAlchemy
events on ``Run`` (a new row; a status that became final), so neither the service nor
the engine has to remember to log, in the web process or in a worker.

A line is written once its transaction has committed: a start that rolled back (a
duplicate idempotency key) is no news. The flush-time hooks read only what is loaded,
so they add no statement to an engine hop; a finished run costs one read after the
commit (the workflow's name, the times, the failed task), on a connection of its own,
because a worker's ``Run`` is loaded without its workflow and its start time is written
by a Core UPDATE.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import Flask
from sqlalchemy import event, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import NO_VALUE
from sqlalchemy.orm.util import identity_key

from capability.dsl.statuses import FINISHED_RUN_STATUSES, RunStatus, TaskStatus
from capability.models import Run, TaskRun, Workflow

log = logging.getLogger(__name__)

PENDING_KEY = "apg_run_log_lines"
FINISHED = frozenset(s.value for s in FINISHED_RUN_STATUSES)
ERROR_CHARS = 300


def _loaded(obj: Any, key: str) -> Any:
    value = inspect(obj).attrs[key].loaded_value
    return None if value is NO_VALUE else value


def _pending(session: Session) -> list[Any]:
    pending: list[Any] = session.info.setdefault(PENDING_KEY, [])
    return pending


def _after_insert(_mapper: Any, _connection: Any, run: Run) -> None:
    session = object_session(run)
    if session is None:
        return
    workflow_id = _loaded(run, "workflow_id")
    workflow = _loaded(run, "workflow") or (
        session.identity_map.get(identity_key(Workflow, workflow_id)) if workflow_id else None)
    name = _loaded(workflow, "name") if workflow is not None else None
    parent = _loaded(run, "parent_run_id")
    origin = f"sub-workflow of run {parent}" if parent else (
        f"{_loaded(run, 'trigger') or 'api'} by {_loaded(run, 'created_by')}")
    _pending(session).append(("started", _loaded(run, "id"), (
        repr(name) if name else str(workflow_id), _loaded(run, "workflow_version"), origin)))


def _after_update(_mapper: Any, connection: Any, run: Run) -> None:
    status: Any = inspect(run).attrs.status
    if not status.history.added or status.loaded_value not in FINISHED:
        return
    session = object_session(run)
    if session is not None:
        _pending(session).append(("finished", _loaded(run, "id"),
                                  (str(status.loaded_value), connection.engine)))


def _after_commit(session: Session) -> None:
    for kind, run_id, facts in session.info.pop(PENDING_KEY, ()):
        try:
            if kind == "started":
                workflow, version, origin = facts
                log.info("run %s started: workflow %s v%s, %s", run_id, workflow, version, origin)
            else:
                _log_finished(run_id, *facts)
        except Exception:  # a log line must never fail the work that committed
            log.debug("could not log the %s run %s", kind, run_id, exc_info=True)


def _after_rollback(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


_FINISHED_RUN = (
    select(Workflow.name, Run.workflow_version, Run.created_at, Run.started_at,
           Run.finished_at, Run.error)
    .join(Workflow, Workflow.id == Run.workflow_id)
)
_FIRST_FAILURE = (
    select(TaskRun.task_id, TaskRun.error)
    .where(TaskRun.status == TaskStatus.FAILED.value, TaskRun.kind == "task")
    .order_by(func.coalesce(TaskRun.finished_at, TaskRun.started_at), TaskRun.position)
    .limit(1)
)


def _seconds(began: dt.datetime | None, ended: dt.datetime | None) -> str:
    if began is None or ended is None:
        return ""
    if (began.tzinfo is None) != (ended.tzinfo is None):  # SQLite keeps no zone
        began, ended = began.replace(tzinfo=None), ended.replace(tzinfo=None)
    return f" in {(ended - began).total_seconds():.1f}s"


def _log_finished(run_id: str, outcome: str, engine: Engine) -> None:
    level = logging.WARNING if outcome == RunStatus.FAILED.value else logging.INFO
    try:
        with engine.connect() as conn:
            row = conn.execute(_FINISHED_RUN.where(Run.id == run_id)).first()
            failure = (conn.execute(_FIRST_FAILURE.where(TaskRun.run_id == run_id)).first()
                       if outcome == RunStatus.FAILED.value else None)
    except Exception:  # the database went away just now: say what is known
        log.debug("could not read the finished run %s", run_id, exc_info=True)
        row = None
    if row is None:
        log.log(level, "run %s finished: %s", run_id, outcome)
        return
    took = _seconds(row.started_at or row.created_at, row.finished_at)
    workflow = f"{row.name!r} v{row.workflow_version}"
    if outcome != RunStatus.FAILED.value:
        log.info("run %s finished: %s%s (workflow %s)", run_id, outcome, took, workflow)
        return
    if failure is not None:
        why = f"task {failure.task_id}: {failure.error or 'failed'}"
    else:
        why = row.error or "see the run's page"
    log.warning("run %s finished: failed%s (workflow %s): %s", run_id, took, workflow,
                str(why).replace("\n", " ")[:ERROR_CHARS])


_HOOKS: tuple[tuple[Any, str, Any], ...] = (
    (Run, "after_insert", _after_insert),
    (Run, "after_update", _after_update),
    (Session, "after_commit", _after_commit),
    (Session, "after_rollback", _after_rollback),
)


def install(_app: Flask | None = None) -> None:
    """Listen on ``Run`` and on every session (once per process)."""
    for target, name, fn in _HOOKS:
        if not event.contains(target, name, fn):
            event.listen(target, name, fn)
