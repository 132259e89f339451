"""The rules of DSL.md as pure functions over task statuses (no database, no Redis)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from capability.dsl import FINISHED_TASK_STATUSES, RunStatus, TaskStatus, TriggerRule

FAILED_LIKE = frozenset({TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED})


class Verdict(StrEnum):
    WAIT = "wait"  # an upstream is not finished yet
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


def trigger_verdict(rule: str, upstream: Iterable[str]) -> Verdict:
    """What a task does once its upstreams are done, under its trigger rule.

    Under the default ``all_success`` a skipped upstream skips the task (DSL.md,
    "Skips") and a failed one makes it ``upstream_failed``; rules that want failures
    (``one_failed``, ``all_failed``) are skipped when there are none.
    """
    statuses = [TaskStatus(s) for s in upstream]
    if any(s not in FINISHED_TASK_STATUSES for s in statuses):
        return Verdict.WAIT
    if not statuses:
        return Verdict.RUN
    failed = sum(s in FAILED_LIKE for s in statuses)
    succeeded = sum(s == TaskStatus.SUCCEEDED for s in statuses)
    skipped = sum(s == TaskStatus.SKIPPED for s in statuses)
    rule = TriggerRule(rule)
    if rule == TriggerRule.ALL_DONE:
        return Verdict.RUN
    if rule == TriggerRule.ALL_SUCCESS:
        if failed:
            return Verdict.UPSTREAM_FAILED
        return Verdict.SKIP if skipped else Verdict.RUN
    if rule == TriggerRule.NONE_FAILED:
        return Verdict.UPSTREAM_FAILED if failed else Verdict.RUN
    if rule == TriggerRule.ONE_SUCCESS:
        if succeeded:
            return Verdict.RUN
        return Verdict.UPSTREAM_FAILED if failed else Verdict.SKIP
    if rule == TriggerRule.ONE_FAILED:
        return Verdict.RUN if failed else Verdict.SKIP
    # ALL_FAILED
    return Verdict.RUN if failed == len(statuses) else Verdict.SKIP


def ready(
    pending: Iterable[str],
    upstream_of: Mapping[str, list[str]],
    rule_of: Mapping[str, str],
    status_of: Mapping[str, str],
) -> dict[str, Verdict]:
    """Verdicts for pending tasks whose upstreams are all finished."""
    out: dict[str, Verdict] = {}
    for task_id in pending:
        verdict = trigger_verdict(
            rule_of[task_id], [status_of[u] for u in upstream_of.get(task_id, [])]
        )
        if verdict != Verdict.WAIT:
            out[task_id] = verdict
    return out


def run_outcome(statuses: Iterable[str]) -> RunStatus | None:
    """The run's final status once every task is finished, else None."""
    values = [TaskStatus(s) for s in statuses]
    if any(s not in FINISHED_TASK_STATUSES for s in values):
        return None
    if any(s == TaskStatus.CANCELLED for s in values):
        return RunStatus.CANCELLED
    if any(s in FAILED_LIKE for s in values):
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED
