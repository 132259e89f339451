"""The rules of DSL.md as pure functions over task statuses (no database, no Redis),
and the ``Plan`` of a workflow version: what never changes while its runs go on."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from app.security.roles import ADMIN
from capability import dsl
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
    return verdict_of(rule, Counts.of(upstream))


@dataclass(frozen=True)
class Counts:
    """How many upstream tasks are in each state (what a trigger rule looks at)."""

    total: int = 0
    unfinished: int = 0
    failed: int = 0  # failed or upstream_failed
    succeeded: int = 0
    skipped: int = 0

    @classmethod
    def of(cls, statuses: Iterable[str]) -> Counts:
        return cls.by_status(Counter(statuses))

    @classmethod
    def by_status(cls, counts: Mapping[str, int]) -> Counts:
        """From ``{status: number of tasks}`` (a ``GROUP BY status``)."""
        by = {TaskStatus(s): n for s, n in counts.items()}
        return cls(
            total=sum(by.values()),
            unfinished=sum(n for s, n in by.items() if s not in FINISHED_TASK_STATUSES),
            failed=sum(n for s, n in by.items() if s in FAILED_LIKE),
            succeeded=by.get(TaskStatus.SUCCEEDED, 0),
            skipped=by.get(TaskStatus.SKIPPED, 0),
        )


def verdict_of(rule: str, counts: Counts) -> Verdict:
    """``trigger_verdict`` from the counts of the upstream statuses."""
    if counts.unfinished:
        return Verdict.WAIT
    if not counts.total:
        return Verdict.RUN
    failed, succeeded, skipped = counts.failed, counts.succeeded, counts.skipped
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
    return Verdict.RUN if failed == counts.total else Verdict.SKIP


def _names(task_ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(task_ids[:limit])
    return shown + (f" and {len(task_ids) - limit} more" if len(task_ids) > limit else "")


def reason_of(rule: str, verdict: Verdict, counts: Counts,
              statuses: Mapping[str, str] | None = None) -> str:
    """Why a task ends ``skipped`` or ``upstream_failed`` under its trigger rule (API.md:
    ``reason``). ``statuses``: the upstreams' statuses by task id when they were read
    one by one (they are named), else only ``counts`` are known (a join of hundreds)."""
    def which(wanted: frozenset[TaskStatus], what: str) -> str:
        if statuses is not None:
            ids = [t for t, s in statuses.items() if s in wanted]
            if ids:
                return f"upstream {what}: {_names(ids)}"
        number = counts.failed if TaskStatus.FAILED in wanted else counts.skipped
        return f"upstream {what}: {number} of {counts.total} upstream tasks"

    rule = TriggerRule(rule)
    if verdict == Verdict.UPSTREAM_FAILED:
        failed = which(FAILED_LIKE, "failed")
        if rule == TriggerRule.ONE_SUCCESS:
            return f"trigger rule one_success: no upstream succeeded ({failed})"
        return failed
    if rule == TriggerRule.ONE_SUCCESS:
        return "trigger rule one_success: every upstream was skipped"
    if rule == TriggerRule.ONE_FAILED:
        return "trigger rule one_failed: no upstream failed"
    if rule == TriggerRule.ALL_FAILED:
        return (f"trigger rule all_failed: not every upstream failed "
                f"({counts.failed} of {counts.total} did)")
    return which(frozenset({TaskStatus.SKIPPED}), "skipped")


def unknown_queues(definition: dsl.WorkflowDefinition,
                   queues: Sequence[str] | None) -> list[dict[str, str]]:
    """A task on a queue no worker is configured for would wait forever: the errors that
    refuse the start (``queues``: ``RQ_QUEUES``; None: not checked)."""
    if queues is None:
        return []
    errors = []
    for i, task in enumerate(definition.tasks):
        queue = dsl.effective_queue(task, definition.defaults)
        if queue not in queues:
            errors.append({"path": f"tasks[{i}].queue",
                           "message": f"no worker listens on queue {queue!r} "
                                      f"(configured: {', '.join(queues)})"})
    return errors


def run_outcome(statuses: Iterable[str]) -> RunStatus | None:
    """The run's final status once every task is finished, else None."""
    return outcome_of(Counter(statuses))


def outcome_of(counts: Mapping[str, int]) -> RunStatus | None:
    """``run_outcome`` from ``{status: number of tasks}`` (a ``GROUP BY status``)."""
    by = {TaskStatus(s): n for s, n in counts.items() if n}
    if any(s not in FINISHED_TASK_STATUSES for s in by):
        return None
    if TaskStatus.CANCELLED in by:
        return RunStatus.CANCELLED
    if any(s in FAILED_LIKE for s in by):
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED


# --------------------------------------------------------------- controls and approvals

ACTIONS = ("cancel", "pause", "resume", "retry")
# What a retry runs again.
RETRIED = (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class Controls:
    """The controls a run allows now (in ``ACTIONS`` order) and why each other one not."""

    allowed: tuple[str, ...]
    blocked: dict[str, str] = field(default_factory=dict)
    status: str = ""

    @property
    def retry_blocked(self) -> str | None:
        """Why a failed or cancelled run cannot be retried (API.md), else None."""
        if self.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            return self.blocked.get("retry")
        return None


def controls_of(status: str, *, compensated: bool, failed_tasks: bool,
                admitted: bool) -> Controls:
    """The rule. ``compensated``: undo steps ran (the work is undone: a retry would
    redo half of it); ``failed_tasks``: a task is failed, upstream_failed or cancelled
    (what a retry runs again); ``admitted``: a queued run holds its ``max_active_runs``
    slot (its first tasks wait for a worker: it can be paused)."""
    blocked: dict[str, str] = {}
    if status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED):
        blocked["cancel"] = f"The run is {status}; only a live run can be cancelled"
    if not (status == RunStatus.RUNNING or (status == RunStatus.QUEUED and admitted)):
        what = "waiting for a slot (max_active_runs)" if status == RunStatus.QUEUED else status
        blocked["pause"] = f"The run is {what}; only a running or starting run can be paused"
    if status != RunStatus.PAUSED:
        blocked["resume"] = f"The run is {status}; only a paused run can be resumed"
    if status not in (RunStatus.FAILED, RunStatus.RUNNING, RunStatus.CANCELLED):
        blocked["retry"] = f"The run is {status}; there is nothing to retry"
    elif compensated:
        blocked["retry"] = ("Compensations ran (the run's work was undone): start a new "
                            "run instead")
    elif not failed_tasks:
        blocked["retry"] = "No task of this run failed"
    return Controls(tuple(a for a in ACTIONS if a not in blocked), blocked, status)


def controls_over(status: str, tasks: Iterable[tuple[str, str]],
                  admitted: Callable[[], bool]) -> Controls:
    """``controls_of`` from the ``(kind, status)`` of every task row of the run;
    ``admitted`` is asked only for a queued run (it costs a statement)."""
    kinds_statuses = list(tasks)
    return controls_of(
        status,
        compensated=any(kind == "compensation" for kind, _ in kinds_statuses),
        failed_tasks=any(s in RETRIED for _, s in kinds_statuses),
        admitted=status == RunStatus.QUEUED and admitted(),
    )


def may_answer(roles: frozenset[str], approvers: str | None) -> bool:
    """Whether a user with ``roles`` may answer an approval (``with.approvers``: a role
    name; none: anyone who may control the run). Admin always may."""
    return not approvers or approvers in roles or ADMIN in roles



# ----------------------------------------------------------------- the plan of a version

@dataclass(frozen=True, eq=False)
class Plan:
    """What the engine needs of a workflow version, worked out once per parsed definition
    (``plan_of``): specs by id, the graph both ways, trigger rules, queues and timeouts,
    and which tasks each expression reads."""

    definition: dsl.WorkflowDefinition
    specs: Mapping[str, dsl.TaskSpec]
    upstream: Mapping[str, tuple[str, ...]]  # no duplicates, definition order
    downstream: Mapping[str, tuple[str, ...]]
    rules: Mapping[str, str]
    position: Mapping[str, int]  # the topological order (``TaskRun.position``)
    queues: Mapping[str, str]
    timeouts: Mapping[str, float | None]
    compensates: bool
    _reads: dict[tuple[str, str], frozenset[str] | None] = field(default_factory=dict)
    _filters: dict[str, tuple[bool, tuple[str, ...]]] = field(default_factory=dict)

    @cached_property
    def has_elements(self) -> bool:
        """Whether a run of this version can have elements (a ``for_each`` task): a
        run's reads skip the element statements otherwise (``snapshot.read``)."""
        return any(spec.for_each is not None for spec in self.specs.values())

    @classmethod
    def build(cls, definition: dsl.WorkflowDefinition) -> Plan:
        specs = {t.id: t for t in definition.tasks}
        upstream = {t.id: tuple(dict.fromkeys(t.depends_on)) for t in definition.tasks}
        downstream: dict[str, list[str]] = {task_id: [] for task_id in specs}
        for task_id, ups in upstream.items():
            for up in ups:
                downstream[up].append(task_id)
        order = dsl.topological_order(definition)
        return cls(
            definition=definition, specs=specs, upstream=upstream,
            downstream={k: tuple(v) for k, v in downstream.items()},
            rules={t.id: t.trigger_rule.value for t in definition.tasks},
            position={task_id: i for i, task_id in enumerate(order)},
            queues={t.id: dsl.effective_queue(t, definition.defaults) for t in definition.tasks},
            timeouts={t.id: dsl.effective_timeout(t, definition.defaults)
                      for t in definition.tasks},
            compensates=any(t.compensate is not None for t in definition.tasks),
        )

    def reads(self, spec: dsl.TaskSpec, what: str) -> frozenset[str] | None:
        """The task ids whose ``tasks.<id>`` the spec's ``with``, ``when`` or ``for_each``
        can read; ``None``: any task (``tasks`` read as a whole, or a dict method such
        as ``tasks.items()``). Cached for the version's own specs; a compensation step
        (built per run) is worked out each time."""
        own = self.specs.get(spec.id) is spec
        key = (spec.id, what)
        if own and key in self._reads:
            return self._reads[key]
        value: Any = {"with": spec.with_, "when": spec.when, "for_each": spec.for_each}[what]
        found = dsl.task_references(value)
        if found is not None and not found <= self.specs.keys():
            found = None
        if own:
            self._reads[key] = found
        return found

    def secrets(self, spec: dsl.TaskSpec, what: str) -> frozenset[str] | None:
        """The secret names the spec's ``with``, ``when`` or ``for_each`` can read
        (``None``: any of its team's); cached like ``reads``."""
        own = self.specs.get(spec.id) is spec
        key = (spec.id, "secrets:" + what)
        if own and key in self._reads:
            return self._reads[key]
        value: Any = {"with": spec.with_, "when": spec.when, "for_each": spec.for_each}[what]
        found = dsl.secret_references(value)
        if own:
            self._reads[key] = found
        return found

    def upstream_filter(self, task_id: str) -> tuple[bool, tuple[str, ...]]:
        """How to select the upstream rows of a task in SQL with the fewest ids:
        ``(True, ids)``: ``task_id IN ids``; ``(False, ids)``: ``task_id NOT IN ids``
        (every task of the run has one row, so the complement names the same rows)."""
        cached = self._filters.get(task_id)
        if cached is None:
            ups = self.upstream[task_id]
            if len(ups) * 2 <= len(self.specs):
                cached = (True, ups)
            else:
                chosen = set(ups)
                cached = (False, tuple(t for t in self.specs if t not in chosen))
            self._filters[task_id] = cached
        return cached


_PLANS: OrderedDict[int, Plan] = OrderedDict()
_PLANS_LOCK = threading.Lock()
_PLANS_MAX = 256


def plan_of(definition: dsl.WorkflowDefinition) -> Plan:
    """The plan of a parsed definition (``state.definition_of`` keeps one object per
    version, so this is built once per version and process). Keyed by the object's
    ``id``: the entry holds the definition, so the id cannot be reused while cached."""
    key = id(definition)
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
        if plan is not None and plan.definition is definition:
            _PLANS.move_to_end(key)
            return plan
    plan = Plan.build(definition)
    with _PLANS_LOCK:
        _PLANS[key] = plan
        while len(_PLANS) > _PLANS_MAX:
            _PLANS.popitem(last=False)
    return plan
