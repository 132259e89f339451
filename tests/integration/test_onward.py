"""A job that goes on with the next task of its chain begins it in the transaction that
recorded the task before (jobs.Onward, runner.begin_made): one commit between two tasks,
not two, and no statement of the begin's own."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from app.extensions import db
from capability.engine import jobs
from capability.models import TaskAttempt, TaskRun
from tests.support.driver import Driver, statements


class _Serving:
    """The AppWorker of a job, as ``jobs`` sees it: it serves every queue and takes
    whichever identity it is asked to."""

    def __init__(self) -> None:
        self.took: list[str] = []

    def queue_names(self) -> list[str]:
        return ["default"]

    def continue_as(self, job_id: str, rq_timeout: float) -> bool:
        self.took.append(job_id)
        return True


def _begins(seen: list[str]) -> int:
    """Begins among the statements: runner._BEGIN_READ, prepared on PostgreSQL (sent with
    the lock), as it is on SQLite."""
    return sum(s.startswith("EXECUTE apg_begin_lock")
               or "apg_task_attempt.status AS attempt_status" in s for s in seen)


def _chain(size: int) -> list[dict[str, Any]]:
    add = {"type": "python", "with": {"callable": "tests.support.callables:add"}}
    tasks = [{"id": "t0", **add, "with": {**add["with"], "kwargs": {"a": 0, "b": 1}}}]
    for i in range(1, size):
        tasks.append({"id": f"t{i}", **add, "depends_on": [f"t{i - 1}"], "with": {
            **add["with"], "kwargs": {"a": f"{{{{ tasks.t{i - 1}.output }}}}", "b": 1}}})
    return tasks


@pytest.mark.parametrize("serving", [True, False], ids=["following", "one job a task"])
def test_a_followed_chain_commits_once_between_tasks(app, client, author, monkeypatch,
                                                     serving):
    size = 4
    driver = Driver(app, client, author, _chain(size))
    worker = _Serving()
    monkeypatch.setattr(jobs, "serving", lambda: worker if serving else None)
    monkeypatch.setattr(jobs, "_dispatcher", lambda: driver.fifo)
    monkeypatch.setattr(jobs, "_worker_name", lambda: "w1")
    with app.app_context():
        engine = db.engine
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    jobs_run = 0
    try:
        with app.app_context(), statements(app) as seen:
            while driver.fifo.items:
                send = driver.fifo.items.popleft()
                jobs.run_attempt(send.attempt_id, send.instant)
                jobs_run += 1
    finally:
        event.remove(engine, "commit", listener)
    assert driver.status() == "succeeded"
    # The run is locked and read at every record, never with its trigger's payload
    # (a webhook's may be large; expressions read it on their own).
    assert not any("trigger_payload" in s for s in seen), seen
    tasks = driver.tasks()
    assert [tasks[f"t{i}"].output for i in range(size)] == list(range(1, size + 1))
    with app.app_context():
        rows = db.session.execute(
            select(TaskAttempt.worker, TaskAttempt.status, TaskAttempt.started_at,
                   TaskAttempt.finished_at)
            .join(TaskRun, TaskRun.id == TaskAttempt.task_run_id)
            .where(TaskRun.run_id == driver.run_id)).all()
        db.session.remove()
    assert len(rows) == size
    assert all(r.worker == "w1" and r.status == "succeeded" and r.started_at is not None
               and r.finished_at >= r.started_at for r in rows)
    if serving:
        # The first begin, then one commit per task: its record and the next one's begin.
        assert len(commits) == 1 + size, commits
        assert len(worker.took) == size - 1  # the job took each next attempt's identity
        assert jobs_run == 1  # nothing else went through the queue
        # ... and on PostgreSQL a followed task's begin costs no statement of its own:
        # only the first task is read as a begin does (twice: the run is queued, so its
        # first try, with a share lock, is told to try again with the exclusive one). (On
        # SQLite the record reads the next task's row as columns, so the begin in its
        # transaction reads it again.)
        begins = 2 if engine.dialect.name == "postgresql" else size + 1
        assert _begins(seen) == begins, seen
    else:
        assert len(commits) == 2 * size, commits
        assert jobs_run == size
        assert _begins(seen) == size + 1, seen
