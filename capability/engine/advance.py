"""What a run does next: decide the tasks that can be decided, and end the run when
every task is finished.

``advance_from`` is the step after one task finished (every completion): it reads only
that task's downstream tasks and the statuses of their upstreams, and counts the run's
task statuses in SQL only when nothing it saw is still unfinished. ``advance`` reads
every task of the run, for start, resume, retry and compensation, where anything may
have changed. Both run inside the caller's transaction, under the run's lock; what
they queue goes out after its commit (``outbox``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BindParameter, bindparam, func, select, text

from app.extensions import DbSession
from app.ids import new_id
from capability import dsl
from capability.dsl import RunStatus, TaskStatus
from capability.engine import compensation, foreach, outbox, state
from capability.engine.decide import (
    Counts,
    Plan,
    Verdict,
    outcome_of,
    plan_of,
    reason_of,
    run_outcome,
    verdict_of,
)
from capability.engine.dispatch import Send
from capability.engine.writes import Writes
from capability.models import OPEN_TASKS, AttemptStatus, Run, TaskAttempt, TaskKind, TaskRun


def advance(session: DbSession, run: Run, definition: dsl.WorkflowDefinition,
            admit: bool = False) -> None:
    """Decide every task that can be decided now; finish the run when all are.

    Reads every task of the run: for start, resume, retry and compensation, where
    anything may have changed. A finished task only needs ``advance_from``.
    A paused run decides nothing: ``resume`` advances it again. ``admit``: a ``queued``
    run takes its slot (its first tasks are queued; it is ``running`` once a worker
    begins one of them)."""
    if run.status != RunStatus.RUNNING and not (admit and run.status == RunStatus.QUEUED):
        return
    plan = plan_of(definition)
    tasks = {t.task_id: t for t in run.tasks if t.kind == TaskKind.TASK}
    while True:
        decided = False
        for task_id, task in tasks.items():
            if task.status != TaskStatus.PENDING:
                continue
            ups = {u: tasks[u].status for u in plan.upstream[task_id]}
            counts = Counts.of(ups.values())
            verdict = verdict_of(plan.rules[task_id], counts)
            if verdict != Verdict.WAIT:
                _decide(session, run, plan, task, verdict, counts, ups)
                decided = True
        if not decided:
            break
    _conclude(session, run, plan, run_outcome(t.status for t in tasks.values()))


def decide_first(session: DbSession, run: Run, plan: Plan, first: list[TaskRun]) -> None:
    """A start (``runner.open_run``): decide the run's first tasks (those without
    upstreams; every other task waits for one of them) from the rows in hand, reading
    nothing. The run's outcome is not concluded here: a first task that finished at once
    makes the caller ``advance`` the whole run."""
    for task in first:
        if task.status == TaskStatus.PENDING:
            counts = Counts.of(())
            verdict = verdict_of(plan.rules[task.task_id], counts)
            if verdict != Verdict.WAIT:
                _decide(session, run, plan, task, verdict, counts, {})


# Built once: building a statement costs about as much Python as running it.
_OF_RUN = (TaskRun.run_id == bindparam("run_id"), TaskRun.kind == TaskKind.TASK)
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


def advance_from(session: DbSession, run: Any, plan: Plan, finished: Any,
                 downstream: list[Any] | None = None) -> None:
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
        return
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
            outbox.flush(session)
            known.update((r.task_id, _Columns(*r)) for r in session.connection().execute(
                _COLUMNS, {"run_id": run.id, "task_ids": missing}))
        pending = sorted((known[i] for i in ids if known[i].status == TaskStatus.PENDING),
                         key=lambda t: plan.position[t.task_id])
        upstream = _Upstream(session, run, plan, known, pending)
        queued = _Queued()
        box = outbox.of(session)
        for task in pending:
            verdict, counts, statuses = upstream.verdict(task.task_id)
            if verdict == Verdict.WAIT:
                continue
            upstream.changed()
            if isinstance(task, _Columns):
                if verdict == Verdict.RUN and queued.takes(plan.specs[task.task_id]):
                    box.send(queued.add(plan, task))
                    continue
                outbox.flush(session)  # what deciding it may read
                loaded = session.get(TaskRun, task.id)
                assert loaded is not None
                task = known[task.task_id] = loaded
            _decide(session, run, plan, task, verdict, counts, statuses)
            if task.status in dsl.FINISHED_TASK_STATUSES:
                frontier.append(task.task_id)
        queued.write(session)
    if unfinished or any(t.status not in dsl.FINISHED_TASK_STATUSES for t in known.values()):
        return  # a task seen here is unfinished: so is the run
    outbox.flush(session)
    # A leaf of a fan-out: one probe finds a sibling still unfinished, where counting
    # the run's statuses reads every task (a 1,000-task fan-out: 1,000 rows a leaf).
    conn = session.connection()
    if conn.execute(_OPEN, {"run_id": run.id}).first() is not None:
        return
    by_status = {status: number for status, number in conn.execute(_COUNT, {"run_id": run.id})}
    _conclude(session, run, plan, outcome_of(by_status))


@dataclass(frozen=True)
class Finished:
    """A finished task as ``advance_from`` sees it (it reads these two fields), for a
    caller that wrote it without an ORM object (``instant``, ``success``)."""

    task_id: str
    status: str


def columns(row_id: str, task_id: str, status: str, attempts: int) -> Any:
    """A downstream task's row read by someone else (``success.record``), as
    ``advance_from`` takes it."""
    return _Columns(row_id, task_id, status, attempts)


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
    inserted and the task rows updated in one executemany each, as ``state.new_attempt``
    and ``_decide`` would have written them."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    @staticmethod
    def takes(spec: dsl.TaskSpec) -> bool:
        return spec.when is None and spec.for_each is None

    def add(self, plan: Plan, task: _Columns) -> Send:
        task.attempts += 1
        task.status = TaskStatus.QUEUED.value
        attempt_id, queue = new_id(), plan.queues[task.task_id]
        self.attempts.append({"id": attempt_id, "task_run_id": task.id, "number": task.attempts,
                              "status": AttemptStatus.QUEUED, "queue": queue,
                              "created_at": state.now(), "started_at": None, "worker": None})
        self.tasks.append({"row": task.id, "count": task.attempts, "current": attempt_id,
                           "status": TaskStatus.QUEUED.value, "started": None})
        self.task_ids.append(task.task_id)
        return Send(attempt_id, queue, timeout=plan.timeouts[task.task_id],
                    instant=state.sends_instant(plan.specs[task.task_id]))

    def write(self, session: DbSession) -> None:
        """Write the rows, or hand them to the writes the transaction holds back
        (``engine.writes``: a record's, which may begin one of them before its commit)."""
        if not self.tasks:
            return
        held = outbox.of(session).writes
        if held is not None:
            held.queue(self.attempts, self.tasks, self.task_ids)
        else:
            Writes(attempts=self.attempts, tasks=self.tasks,
                   task_ids=self.task_ids).flush(session.connection())
        self.attempts, self.tasks, self.task_ids = [], [], []


def _waits(session: DbSession, run: Any, plan: Plan, known: dict[str, Any], task_id: str,
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
        outbox.flush(session)  # what autoflush does before an ORM statement, and more
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

    def __init__(self, session: DbSession, run: Any, plan: Plan, known: dict[str, Any],
                 pending: list[Any]) -> None:
        self.session, self.run, self.plan, self.known = session, run, plan, known
        self.counts: dict[tuple[bool, tuple[str, ...]], Counts] = {}
        self.statuses: dict[str, str] = {}
        wanted = {u for t in pending for u in plan.upstream[t.task_id] if u not in known}
        if wanted and len(wanted) <= self.ROW_BY_ROW:
            outbox.flush(session)
            self.statuses = dict(session.execute(  # type: ignore[arg-type]
                _STATUSES, {"run_id": run.id, "task_ids": sorted(wanted)}).all())

    def changed(self) -> None:
        self.counts.clear()  # a verdict changed a status: counts are read again

    def verdict(self, task_id: str) -> tuple[Verdict, Counts, dict[str, str] | None]:
        """The task's verdict, with what it was decided from: the counts of its
        upstreams' statuses and, when read one by one, the statuses by task id."""
        values: dict[str, str] = {}
        for up in self.plan.upstream[task_id]:
            status = self.known[up].status if up in self.known else self.statuses.get(up)
            if status is None:
                break
            if status not in dsl.FINISHED_TASK_STATUSES:
                return Verdict.WAIT, Counts(), None
            values[up] = status
        else:
            counts = Counts.of(values.values())
            return verdict_of(self.plan.rules[task_id], counts), counts, values
        key = self.plan.upstream_filter(task_id)
        if key not in self.counts:
            inside, ids = key
            outbox.flush(self.session)
            self.counts[key] = Counts.by_status(dict(self.session.execute(  # type: ignore[arg-type]
                _COUNT_IN if inside else _COUNT_NOT_IN,
                {"run_id": self.run.id, "task_ids": list(ids)}).all()))
        counts = self.counts[key]
        return verdict_of(self.plan.rules[task_id], counts), counts, None


def _decide(session: DbSession, run: Any, plan: Plan, task: TaskRun, verdict: Verdict,
            counts: Counts, statuses: dict[str, str] | None) -> None:
    """Carry out a verdict on a pending task: skip it or fail it (saying why), or queue it
    (a ``for_each`` task: the attempt that makes its elements)."""
    if verdict in (Verdict.SKIP, Verdict.UPSTREAM_FAILED):
        status = TaskStatus.SKIPPED if verdict == Verdict.SKIP else TaskStatus.UPSTREAM_FAILED
        state.finish_task(task, status,
                          reason=reason_of(plan.rules[task.task_id], verdict, counts, statuses))
        return
    spec = plan.specs[task.task_id]
    # A `when` and a `for_each` list are evaluated by the worker that begins the
    # attempt, outside any transaction (``gates``, ``foreach.evaluate``): never here,
    # under the run's lock.
    if spec.for_each is not None:
        foreach.start(session, run, task, spec, plan.definition)
        return
    task.status = TaskStatus.QUEUED.value
    state.new_attempt(session, task, spec, plan.definition, AttemptStatus.QUEUED)


def _conclude(session: DbSession, run: Any, plan: Plan, outcome: RunStatus | None) -> None:
    """Every task is finished (``outcome``): compensate a failed run first, then end it,
    start what waited for its slot and tell a parent run."""
    if outcome is None:
        return
    if not isinstance(run, Run):  # a row (instant.py): the run's end writes the run
        loaded = session.get(Run, run.id)
        assert loaded is not None
        run = loaded
    if outcome == RunStatus.FAILED and plan.compensates and not compensation.advance(
            session, run, plan.definition):
        return  # an undo step is under way
    if run.status not in state.FINISHED_RUN:
        run.status = outcome.value
        run.finished_at = state.now()
        outbox.of(session).touch(run.id)
        state.log_finished(session, run, plan.definition.name)
        state.note_finished(session, run)
        promote_queued(session, run.workflow_id, plan.definition.max_active_runs)
        if run.parent_attempt_id is not None:
            # On the parent task's own queue: a worker serves it (the start checked).
            parent = session.get(TaskAttempt, run.parent_attempt_id)
            queue = parent.queue if parent is not None else dsl.DEFAULT_QUEUE
            outbox.of(session).send(Send(run.parent_attempt_id, queue, child_run=run.id))


def promote_queued(session: DbSession, workflow_id: str, limit: int | None) -> None:
    """A run finished: start the oldest runs of the workflow that waited for a slot."""
    if not limit:
        return
    session.flush()
    for queued in state.waiting_runs(session, workflow_id,
                                     limit - state.active_runs(session, workflow_id)):
        start(session, queued)


def start(session: DbSession, run: Run) -> None:
    """A queued run that waited for a slot takes one: its first ready tasks are sent
    (and, for a retried run, the elements of its restarted for_each tasks)."""
    plan = state.plan_for(session, run)
    advance(session, run, plan.definition, admit=True)
    for task in run.tasks:
        spec = plan.specs.get(task.task_id)
        if (task.kind == TaskKind.TASK and task.status == TaskStatus.RUNNING
                and spec is not None and spec.for_each is not None):
            foreach.fill(session, task, spec, plan.definition)
    outbox.of(session).touch(run.id)


_RUN_OF_ATTEMPT = select(TaskRun.run_id).join(
    TaskAttempt, TaskAttempt.task_run_id == TaskRun.id).where(
    TaskAttempt.id == bindparam("attempt_id"))


def skip_gated(session: DbSession, attempt_id: str, reason: str) -> bool:
    """The ``when`` of a task was false as its attempt began (``gates``): the task is
    skipped, as if it had never been queued (the attempt goes: it ran nothing), and the
    run goes on. False when the attempt no longer runs (its run was cancelled while the
    ``when`` was evaluated)."""
    run_id = session.execute(_RUN_OF_ATTEMPT, {"attempt_id": attempt_id}).scalar()
    if run_id is None:
        return False
    run = state.lock_run(session, run_id)
    attempt = session.get(TaskAttempt, attempt_id, populate_existing=True)
    task = session.get(TaskRun, attempt.task_run_id, populate_existing=True) \
        if attempt is not None else None
    if attempt is None or task is None or attempt.status != AttemptStatus.RUNNING or (
            task.current_attempt_id != attempt_id
            or run.status not in (RunStatus.RUNNING, RunStatus.PAUSED)):
        return False
    task.current_attempt_id = None
    task.attempts -= 1
    task.started_at = None
    session.delete(attempt)
    state.finish_task(task, TaskStatus.SKIPPED, reason=reason)
    outbox.of(session).touch(run.id)
    session.flush()
    advance_from(session, run, state.plan_for(session, run), task)  # nothing while paused
    return True

