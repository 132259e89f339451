"""Run and task statuses and trigger rules, as the definition language names them."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FINISHED_RUN_STATUSES", "FINISHED_TASK_STATUSES", "RunStatus", "TaskStatus", "TriggerRule",
]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING_APPROVAL = "waiting_approval"
    WAITING_INPUT = "waiting_input"  # an `agent` step: waits for an agent's output
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ALL_FAILED = "all_failed"
    NONE_FAILED = "none_failed"


FINISHED_RUN_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
)
FINISHED_TASK_STATUSES = frozenset({
    TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED,
    TaskStatus.CANCELLED,
})
# In a fixed order: the partial index of unfinished tasks names them in SQL, and a query
# uses that index only when it names the same list.
UNFINISHED_TASK_STATUSES = tuple(sorted(s.value for s in TaskStatus
                                        if s not in FINISHED_TASK_STATUSES))
