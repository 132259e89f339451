"""Row writes a transaction holds back until its commit, so that they reach PostgreSQL
as one statement (a data-modifying ``WITH``) instead of one each.

Only the record of a task's success (``success``) holds writes: the attempt and the task
that succeeded, and the first attempts of the tasks that success queued (``advance``),
one of which the same transaction may begin (``jobs.Onward``). A step of a chain is then
two round trips: the run's lock with the read of the attempt and its task's next one,
and this write (prepared on each connection: ``engine.prepared``). Whatever reads the
run's task rows before the commit writes them first (``outbox.flush``), so no read sees
the rows as they were.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, insert, update
from sqlalchemy.engine import Connection

from capability.dsl import TaskStatus
from capability.engine import prepared
from capability.models import AttemptStatus, TaskAttempt, TaskRun

_AT = bindparam("at", type_=TaskAttempt.finished_at.type)
_ATTEMPT = update(TaskAttempt).where(TaskAttempt.id == bindparam("attempt_id"))
_SUCCEED_ATTEMPT = _ATTEMPT.values(status=AttemptStatus.SUCCEEDED, finished_at=_AT)
# The attempt's log goes in its UPDATE, when it wrote one (``runner.complete_attempt``).
_SUCCEED_LOGGED = _ATTEMPT.values(
    status=AttemptStatus.SUCCEEDED, finished_at=_AT,
    log=bindparam("lines", type_=TaskAttempt.log.type), log_truncated=bindparam("cut"))
# A task that succeeded at ``at`` with output ``out`` (the instant path's too: its attempt
# begins and ends at once, hence its start time when it has none).
SUCCEED_TASK = update(TaskRun).where(TaskRun.id == bindparam("row")).values(
    status=TaskStatus.SUCCEEDED.value, output=bindparam("out", type_=TaskRun.output.type),
    error=None, started_at=func.coalesce(TaskRun.started_at, _AT), finished_at=_AT)

# A task queued (``advance._Queued``), begun or not by the same transaction.
INSERT_ATTEMPT = insert(TaskAttempt)
QUEUE_TASK = update(TaskRun).where(TaskRun.id == bindparam("row")).values(
    status=bindparam("status"), attempts=bindparam("count"),
    current_attempt_id=bindparam("current"),
    started_at=func.coalesce(TaskRun.started_at, bindparam("started", type_=_AT.type)))
# The same, one row, with names of its own, for the statement that writes everything.
_NEXT_ATTEMPT = insert(TaskAttempt).values(
    id=bindparam("n_id"), task_run_id=bindparam("n_row"), number=bindparam("n_count"),
    status=bindparam("n_attempt_status"), queue=bindparam("n_queue"),
    created_at=bindparam("n_created", type_=_AT.type),
    started_at=bindparam("n_started", type_=_AT.type), worker=bindparam("n_worker"))
_NEXT_TASK = update(TaskRun).where(TaskRun.id == bindparam("n_row")).values(
    status=bindparam("n_status"), attempts=bindparam("n_count"),
    current_attempt_id=bindparam("n_id"),
    started_at=func.coalesce(TaskRun.started_at, bindparam("n_started", type_=_AT.type)))


# Queued rows written in one executemany: a fan-out queues hundreds, and one executemany
# of 1,000 rows builds ~3 MB of statement and parameters at once (what the worker's
# memory then keeps); 100 rows, a tenth.
SLICE = 100


def _succeed(logged: bool) -> Any:
    return _SUCCEED_LOGGED if logged else _SUCCEED_ATTEMPT


# (logged, with a next task) -> the one statement, prepared on each connection
# (``engine.prepared``: planning it cost more than running it)
_ONE = {
    (logged, True): prepared.Statement(
        f"apg_success_write_next{'_logged' * logged}",
        _NEXT_ATTEMPT.add_cte(_succeed(logged).cte("succeeded_attempt"))
        .add_cte(SUCCEED_TASK.cte("succeeded_task")).add_cte(_NEXT_TASK.cte("next_task")))
    for logged in (False, True)
} | {
    (logged, False): prepared.Statement(
        f"apg_success_write{'_logged' * logged}",
        SUCCEED_TASK.add_cte(_succeed(logged).cte("succeeded_attempt")))
    for logged in (False, True)
}


@dataclass
class Writes:
    """The held writes of one transaction (``Outbox.writes``)."""

    # The run the transaction locked, as its record read it (``success.begin_held``).
    run: Any = None
    success: dict[str, Any] | None = None
    # Attempts queued, with their tasks' rows and task ids, in the same order.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    def succeed(self, attempt_id: str, row: str, at: dt.datetime, output: Any,
                log: tuple[list[dict[str, str]], int] | None) -> None:
        """The attempt and its task (row id ``row``) succeeded at ``at``."""
        self.success = {"attempt_id": attempt_id, "row": row, "at": at, "out": output}
        if log is not None:
            self.success["lines"], self.success["cut"] = log

    def queue(self, attempts: list[dict[str, Any]], tasks: list[dict[str, Any]],
              task_ids: list[str]) -> None:
        self.attempts += attempts
        self.tasks += tasks
        self.task_ids += task_ids

    def begin(self, attempt_id: str, at: dt.datetime, worker: str | None
              ) -> tuple[str, int] | None:
        """A queued attempt held here runs from ``at``: its task's id and its number, or
        None when it is not one of them."""
        for attempt, task, task_id in zip(self.attempts, self.tasks, self.task_ids,
                                          strict=True):
            if attempt["id"] == attempt_id:
                attempt.update(status=AttemptStatus.RUNNING, started_at=at, worker=worker)
                task.update(status=TaskStatus.RUNNING.value, started=at)
                return task_id, attempt["number"]
        return None

    def flush(self, conn: Connection) -> None:
        """Write what is held (and hold nothing more): one statement for a success and
        the one task it queued; else the success, then the queued rows ``SLICE`` at a
        time."""
        success, attempts, tasks = self.success, self.attempts, self.tasks
        self.success, self.attempts, self.tasks, self.task_ids = None, [], [], []
        if success is not None:
            logged = "lines" in success
            if len(tasks) == 1:
                attempt, task = attempts[0], tasks[0]
                prepared.execute(conn, (_ONE[(logged, True)], {
                    **success, "n_id": attempt["id"], "n_row": task["row"],
                    "n_count": task["count"], "n_attempt_status": attempt["status"],
                    "n_queue": attempt["queue"], "n_created": attempt["created_at"],
                    "n_started": attempt["started_at"], "n_worker": attempt["worker"],
                    "n_status": task["status"]}))
                return
            prepared.execute(conn, (_ONE[(logged, False)], success))
        for start in range(0, len(tasks), SLICE):
            conn.execute(INSERT_ATTEMPT, attempts[start:start + SLICE])
            conn.execute(QUEUE_TASK, tasks[start:start + SLICE])
