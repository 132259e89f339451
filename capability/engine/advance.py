"""What a run does next: decide the tasks that can be decided, and end the run when
every task is finished.

``advance_from`` is the step after one task finished (every completion): it reads only
that task's downstream tasks and the statuses of their upstreams, and counts the run's
task statuses in SQL only when nothing it saw is still unfinished. ``advance`` reads
every task of the run, for start, resume, retry and compensation, where anything may
have changed. Both run inside the caller's transaction, under the run's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BindParameter, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.orm import lazyload

from app.ids import new_id
from capability import dsl
from capability.dsl import RunStatus, TaskStatus
from capability.engine import compensation, foreach, masking, runner
from capability.engine.decide import (
    Counts,
    Plan,
    Verdict,
    outcome_of,
    plan_of,
    ready,
    run_outcome,
    trigger_verdict,
    verdict_of,
)
from capability.engine.dispatch import Send
from capability.models import OPEN_TASKS, Run, TaskAttempt, TaskItem, TaskRun


def advance(session: Any, run: Run, definition: dsl.WorkflowDefinition,
            admit: bool = False) -> list[Send]:
    """Decide every task that can be decided now; finish the run when all are.

    Reads every task of the run: for start, resume, retry and compensation, where
    anything may have changed. A finished task only needs ``advance_from``.
    A paused run decides nothing: ``resume`` advances it again. ``admit``: a ``queued``
    run takes its slot (its first tasks are queued; it is ``running`` once a worker
    begins one of them)."""
    if run.status != RunStatus.RUNNING and not (admit and run.status == RunStatus.QUEUED):
        return []
    plan = plan_of(definition)
    sends: list[Send] = []
    tasks = {t.task_id: t for t in run.tasks if t.kind == "task"}
    while True:
        status_of = {tid: t.status for tid, t in tasks.items()}
        pending = [tid for tid, s in status_of.items() if s == TaskStatus.PENDING]
        verdicts = ready(pending, plan.upstream, plan.rules, status_of)
        if not verdicts:
            break
        for task_id, verdict in verdicts.items():
            sends += _decide(session, run, plan, tasks[task_id], verdict)
    return sends + _conclude(session, run, plan, run_outcome(t.status for t in tasks.values()))


# Built once: building a statement costs about as much Python as running it.
_OF_RUN = (TaskRun.run_id == bindparam("run_id"), TaskRun.kind == "task")
_IDS: BindParameter[list[str]] = bindparam("task_ids", expanding=True)
_COLUMNS = select(TaskRun.id, TaskRun.task_id, TaskRun.status, TaskRun.attempts).where(
    *_OF_RUN, TaskRun.task_id.in_(_IDS))
_STATUSES = select(TaskRun.task_id, TaskRun.status).where(*_OF_RUN, TaskRun.task_id.in_(_IDS))
_COUNT = select(TaskRun.status, func.count()).where(*_OF_RUN).group_by(TaskRun.status)
_COUNT_IN = _COUNT.where(TaskRun.task_id.in_(_IDS))
_COUNT_NOT_IN = _COUNT.where(TaskRun.task_id.not_in(_IDS))
# One unfinished task among some, if any: a task waits as long as one of its upstreams
# is unfinished, and finding one is a probe of ``ix_apg_task_run_open`` (which holds
# only such rows) where reading the upstreams' statuses reads them all.
# The index's own condition, word for word: with bound values in its place neither
# SQLite nor a generic PostgreSQL plan could tell that the index applies.
_OPEN = select(TaskRun.task_id).where(*_OF_RUN, text(OPEN_TASKS)).limit(1)
_OPEN_IN = _OPEN.where(TaskRun.task_id.in_(_IDS))
_OPEN_NOT_IN = _OPEN.where(TaskRun.task_id.not_in(_IDS))


def advance_from(session: Any, run: Any, plan: Plan, finished: Any,
                 downstream: list[TaskRun] | None = None) -> list[Send]:
    """A task finished: decide its downstream tasks (and theirs, when a skip or an
    upstream failure makes them decidable too), then the run's outcome.

    Reads only those tasks and the statuses of their upstreams (in one statement, or a
    count per status when a task has many upstreams); the outcome takes one count per
    status, and none while a task seen here is still unfinished. ``downstream``: rows of
    the finished task's downstream tasks the caller already read under the lock.

    ``run``: the locked ``Run``, or a row of its ``id``, ``status``, ``params`` and
    ``trigger`` (the ORM object is then loaded only if the run ends). ``finished``: the
    task's ``TaskRun``, or anything with its ``task_id`` and ``status``."""
    if run.status != RunStatus.RUNNING:
        return []
    sends: list[Send] = []
    known: dict[str, Any] = {t.task_id: t for t in downstream or ()}  # TaskRun, _Columns
    known[finished.task_id] = finished
    frontier = [finished.task_id]
    unfinished = False  # a task seen waiting: the run is not over
    while frontier:
        ids = set()
        probed: dict[tuple[bool, tuple[str, ...]], bool] = {}  # tasks of the same upstreams
        for d in {d for task_id in frontier for d in plan.downstream[task_id]}:
            if _waits(session, run, plan, known, d, probed):
                unfinished = True
            else:
                ids.add(d)
        frontier = []
        if not ids:
            break
        missing = sorted(ids - known.keys())
        if missing:
            if session.new or session.dirty:
                session.flush()
            known.update((r.task_id, _Columns(*r)) for r in session.connection().execute(
                _COLUMNS, {"run_id": run.id, "task_ids": missing}))
        pending = sorted((known[i] for i in ids if known[i].status == TaskStatus.PENDING),
                         key=lambda t: plan.position[t.task_id])
        upstream = _Upstream(session, run, plan, known, pending)
        queued = _Queued()
        for task in pending:
            verdict = upstream.verdict(task.task_id)
            if verdict == Verdict.WAIT:
                continue
            upstream.changed()
            if isinstance(task, _Columns):
                if verdict == Verdict.RUN and queued.takes(plan.specs[task.task_id]):
                    sends.append(queued.add(plan, task))
                    continue
                task = known[task.task_id] = session.get(TaskRun, task.id)
            sends += _decide(session, run, plan, task, verdict)
            if task.status in dsl.FINISHED_TASK_STATUSES:
                frontier.append(task.task_id)
        queued.write(session)
    if unfinished or any(t.status not in dsl.FINISHED_TASK_STATUSES for t in known.values()):
        return sends  # a task seen here is unfinished: so is the run
    if session.new or session.dirty:
        session.flush()
    # A leaf of a fan-out: one probe finds a sibling still unfinished, where counting
    # the run's statuses reads every task (a 1,000-task fan-out: 1,000 rows a leaf).
    conn = session.connection()
    if conn.execute(_OPEN, {"run_id": run.id}).first() is not None:
        return sends
    counts = conn.execute(_COUNT, {"run_id": run.id}).all()
    return sends + _conclude(session, run, plan, outcome_of(dict(counts)))


@dataclass(slots=True)
class _Columns:
    """A downstream task read as columns, not as a ``TaskRun``: the hop that decides a
    fan-out reads hundreds of them, and ORM objects (with the unit of work that writes
    them) made that one hop ~10 MB of short-lived objects, which the worker process then
    kept. Loaded as a ``TaskRun`` only when its verdict is more than queueing it."""

    id: str
    task_id: str
    status: str
    attempts: int


@dataclass
class _Queued:
    """Tasks queued by ``advance_from`` without ORM objects: their first attempt is
    inserted and the task rows updated in one executemany each, as ``runner.new_attempt``
    and ``_decide`` would have written them."""

    SLICE = 100

    attempts: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def takes(spec: dsl.TaskSpec) -> bool:
        return spec.when is None and spec.for_each is None

    def add(self, plan: Plan, task: _Columns) -> Send:
        task.attempts += 1
        task.status = TaskStatus.QUEUED.value
        attempt_id, queue = new_id(), plan.queues[task.task_id]
        self.attempts.append({"id": attempt_id, "task_run_id": task.id, "number": task.attempts,
                              "status": "queued", "queue": queue, "created_at": runner.now()})
        self.tasks.append({"row": task.id, "count": task.attempts, "current": attempt_id})
        return Send(attempt_id, queue, timeout=plan.timeouts[task.task_id],
                    instant=plan.specs[task.task_id].type in runner.INSTANT_TYPES)

    def write(self, session: Any) -> None:
        if not self.tasks:
            return
        conn = session.connection()
        # In slices: one executemany of 1,000 rows builds ~3 MB of statement and
        # parameters at once (what the worker's memory then keeps); 100 rows, a tenth.
        for start in range(0, len(self.tasks), self.SLICE):
            conn.execute(_INSERT_ATTEMPT, self.attempts[start:start + self.SLICE])
            conn.execute(_QUEUE_TASK, self.tasks[start:start + self.SLICE])
        self.attempts, self.tasks = [], []


_INSERT_ATTEMPT = insert(TaskAttempt)
_QUEUE_TASK = update(TaskRun).where(TaskRun.id == bindparam("row")).values(
    status=TaskStatus.QUEUED.value, attempts=bindparam("count"),
    current_attempt_id=bindparam("current"))


def _waits(session: Any, run: Any, plan: Plan, known: dict[str, Any], task_id: str,
           probed: dict[tuple[bool, tuple[str, ...]], bool]) -> bool:
    """Whether one of the task's upstreams is unfinished, when that can be told without
    reading the task: from the rows in hand, else with one probe per set of upstreams
    (``probed``). False when every upstream is in hand and finished (the task is then
    read and decided)."""
    ups = plan.upstream[task_id]
    if any(known[u].status not in dsl.FINISHED_TASK_STATUSES for u in ups if u in known):
        return True
    if all(u in known for u in ups):
        return False
    key = plan.upstream_filter(task_id)
    if key not in probed:
        inside, ids = key
        if session.new or session.dirty:
            session.flush()  # what autoflush does before an ORM statement
        # On the connection: an ORM-enabled execution costs more Python than the probe.
        probed[key] = session.connection().execute(
            _OPEN_IN if inside else _OPEN_NOT_IN,
            {"run_id": run.id, "task_ids": list(ids)}).first() is not None
    return probed[key]


class _Upstream:
    """The upstream statuses of the pending tasks of one step of ``advance_from``.

    Up to ``ROW_BY_ROW`` upstreams not in hand are read in one statement; past that
    (a join of hundreds) each task's upstreams are counted per status in SQL, once per
    set of upstreams until a verdict changes a status."""

    ROW_BY_ROW = 100

    def __init__(self, session: Any, run: Any, plan: Plan, known: dict[str, Any],
                 pending: list[TaskRun]) -> None:
        self.session, self.run, self.plan, self.known = session, run, plan, known
        self.counts: dict[tuple[bool, tuple[str, ...]], Counts] = {}
        self.statuses: dict[str, str] = {}
        wanted = {u for t in pending for u in plan.upstream[t.task_id] if u not in known}
        if wanted and len(wanted) <= self.ROW_BY_ROW:
            self.statuses = dict(session.execute(
                _STATUSES, {"run_id": run.id, "task_ids": sorted(wanted)}).all())

    def changed(self) -> None:
        self.counts.clear()  # a verdict changed a status: counts are read again

    def verdict(self, task_id: str) -> Verdict:
        values: list[str] = []
        for up in self.plan.upstream[task_id]:
            status = self.known[up].status if up in self.known else self.statuses.get(up)
            if status is None:
                break
            if status not in dsl.FINISHED_TASK_STATUSES:
                return Verdict.WAIT
            values.append(status)
        else:
            return trigger_verdict(self.plan.rules[task_id], values)
        key = self.plan.upstream_filter(task_id)
        if key not in self.counts:
            inside, ids = key
            self.counts[key] = Counts.by_status(dict(self.session.execute(
                _COUNT_IN if inside else _COUNT_NOT_IN,
                {"run_id": self.run.id, "task_ids": list(ids)}).all()))
        return verdict_of(self.plan.rules[task_id], self.counts[key])


def _decide(session: Any, run: Any, plan: Plan, task: TaskRun, verdict: Verdict) -> list[Send]:
    """Carry out a verdict on a pending task; the Sends of what it queued."""
    if verdict == Verdict.SKIP:
        runner.finish_task(task, TaskStatus.SKIPPED)
        return []
    if verdict == Verdict.UPSTREAM_FAILED:
        runner.finish_task(task, TaskStatus.UPSTREAM_FAILED)
        return []
    spec = plan.specs[task.task_id]
    if spec.when is not None and not _when(session, run, plan, task, spec):
        return []  # _when finished the task (skipped, or failed on a bad expression)
    if spec.for_each is not None:
        return foreach.start(session, run, task, spec, plan.definition)
    task.status = TaskStatus.QUEUED.value
    return [runner.new_attempt(session, task, spec, plan.definition, "queued")]


def _conclude(session: Any, run: Any, plan: Plan, outcome: RunStatus | None) -> list[Send]:
    """Every task is finished (``outcome``): compensate a failed run first, then end it,
    start what waited for its slot and tell a parent run."""
    if outcome is None:
        return []
    if not isinstance(run, Run):  # a row (instant.py): the run's end writes the run
        run = session.get(Run, run.id)
    sends: list[Send] = []
    if outcome == RunStatus.FAILED and plan.compensates:
        finished, more = compensation.advance(session, run, plan.definition)
        sends += more
        if not finished:
            return sends
    if run.status not in runner.FINISHED_RUN:
        run.status = outcome.value
        run.finished_at = runner.now()
        sends += promote_queued(session, run.workflow_id, plan.definition.max_active_runs)
        if run.parent_attempt_id is not None:
            # On the parent task's own queue: a worker serves it (the start checked).
            parent = session.get(TaskAttempt, run.parent_attempt_id)
            queue = parent.queue if parent is not None else dsl.DEFAULT_QUEUE
            sends.append(Send(run.parent_attempt_id, queue, child_run=run.id))
    return sends


# A queued run has taken its slot once an attempt of it waits for a worker (it is
# ``running`` from the moment a worker begins one); until then it waits for a slot. Only
# attempts that count (a task's or an element's current one): a failed for_each can
# leave an element's queued attempt behind, which a retry replaces.
_ADMITTED = (
    select(TaskAttempt.id).join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
    .outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id)
    .where(TaskRun.run_id == Run.id, TaskAttempt.status.in_(("queued", "scheduled")),
           or_(TaskAttempt.id == TaskRun.current_attempt_id,
               TaskAttempt.id == TaskItem.current_attempt_id))
    .exists()
)


def admitted(session: Any, run_id: str) -> bool:
    """Whether a queued run holds its slot (see ``_ADMITTED``)."""
    return bool(session.execute(select(_ADMITTED.where(Run.id == run_id))).scalar())


def active_runs(session: Any, workflow_id: str) -> int:
    """Runs of the workflow that hold a ``max_active_runs`` slot: running, paused, or
    queued with their first tasks sent."""
    return int(session.execute(
        select(func.count()).select_from(Run).where(
            Run.workflow_id == workflow_id,
            or_(Run.status.in_([RunStatus.RUNNING.value, RunStatus.PAUSED.value]),
                and_(Run.status == RunStatus.QUEUED.value, _ADMITTED)),
        )
    ).scalar_one())


def promote_queued(session: Any, workflow_id: str, limit: int | None) -> list[Send]:
    """A run finished: start the oldest runs of the workflow that waited for a slot."""
    if not limit:
        return []
    session.flush()
    active = active_runs(session, workflow_id)
    waiting = session.execute(
        select(Run).where(Run.workflow_id == workflow_id, Run.status == RunStatus.QUEUED.value,
                          ~_ADMITTED)
        .order_by(Run.created_at, Run.id).limit(max(0, limit - active))
        .options(lazyload("*")).with_for_update(of=Run)
    ).scalars().all()
    sends: list[Send] = []
    for queued in waiting:
        sends += runner.start(session, queued)
    return sends


def _when(session: Any, run: Any, plan: Plan, task: TaskRun, spec: dsl.TaskSpec) -> bool:
    scope: dict[str, Any] = {}
    try:
        scope = runner.scope_for(session, run, plan.reads(spec, "when"),
                                 plan.secrets(spec, "when"))
        if dsl.evaluate_condition(str(spec.when), scope, path="when"):
            return True
        runner.finish_task(task, TaskStatus.SKIPPED)
    except dsl.ExpressionError as exc:
        runner.finish_task(task, TaskStatus.FAILED, masking.text(str(exc), scope))
    return False
