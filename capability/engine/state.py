"""The bottom of the engine: the rows of a run and what every step does to them.

Primitives only, used by every other engine module and importing none of them above
``decide``: the parsed definition and plan of a version (cached), the run's lock, what
expressions see (``scope_for``), a new attempt (``new_attempt``), a finished task, the
``max_active_runs`` admission, and **the one retry decision** (``retry_decision`` and
``after_failure``), which plain tasks, ``for_each`` elements and the reaper's lost
attempts all go through.

Nothing here commits: the owner of the transaction does (``outbox``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import lazyload

from app.extensions import DbSession
from app.ids import new_id
from app.times import iso, utcnow
from capability import dsl
from capability.dsl import RunStatus, TaskStatus
from capability.engine import masking, outbox, prepared
from capability.engine.decide import Plan, plan_of
from capability.engine.dispatch import Send
from capability.engine.settings import EngineSettings

if TYPE_CHECKING:
    from capability.engine.tasklog import Writer
from capability.models import (
    AttemptStatus,
    EventTrigger,
    Run,
    RunEvent,
    TaskAttempt,
    TaskItem,
    TaskKind,
    TaskRun,
    WorkflowVersion,
)

FINISHED_RUN = frozenset(s.value for s in dsl.FINISHED_RUN_STATUSES)
RUNNABLE = (RunStatus.RUNNING, RunStatus.QUEUED)
# Types whose attempt runs in microseconds and touches nothing outside the database
# (no I/O, no user code): a worker begins, runs and records one in a single
# transaction, one lock and one commit instead of two (``instant``). Such an attempt is
# never seen `running`; it goes from queued to its result.
INSTANT_TYPES = frozenset({"noop", "transform", "fail"})


def gated(spec: dsl.TaskSpec) -> bool:
    """Whether the task's attempts evaluate its ``when`` as they begin (``gates``): a
    ``for_each`` task's is evaluated once, by the attempt that makes its elements
    (``foreach.evaluate``), never by an element's."""
    return spec.when is not None and spec.for_each is None


def evaluates(spec: dsl.TaskSpec) -> bool:
    """Whether an attempt of the task evaluates expressions as it runs (templates in its
    ``with``; its ``when``, unless it is a ``for_each`` task's, evaluated by the attempt
    that makes its elements). Such an attempt never runs in its begin's transaction: no
    expression is evaluated while the run is locked (``jobs.run_one``)."""
    return gated(spec) or bool(dsl.find_expressions(spec.with_))


def sends_instant(spec: dsl.TaskSpec) -> bool:
    """Whether the task's attempts take the instant path (``instant.py``)."""
    return spec.type in INSTANT_TYPES and not evaluates(spec)

now = utcnow


def seconds_until(when: dt.datetime) -> float:
    return max(0.0, (when - now()).total_seconds())


# -- definitions and plans, cached per version (versions never change) ---------------

@lru_cache(maxsize=256)
def _definition(version_id: str, frozen: str) -> dsl.WorkflowDefinition:
    result = dsl.validate_definition(json.loads(frozen))
    if result.definition is None:  # saved definitions were valid when saved
        raise ValueError(f"version {version_id} no longer validates: {result.errors}")
    return result.definition


def definition_of(version: WorkflowVersion) -> dsl.WorkflowDefinition:
    # Keys in the author's order: params are shown in it (the Run form).
    return _definition(version.id, json.dumps(version.definition))


_BY_VERSION: OrderedDict[str, dsl.WorkflowDefinition] = OrderedDict()
_BY_VERSION_LOCK = threading.Lock()


def plan_for(session: DbSession, run: Run) -> Plan:
    """The plan of the run's version. The hot path of every attempt: no statement at all
    once this process has seen the version, where ``definition_of(run.version)`` reads
    and serialises its JSON each time."""
    return plan_for_version(session, run.version_id)


def plan_for_version(session: DbSession, version_id: str) -> Plan:
    return plan_of(definition_for_version(session, version_id))


def definition_for_version(session: DbSession, version_id: str) -> dsl.WorkflowDefinition:
    """The definition of a version (immutable once saved): read once per process."""
    with _BY_VERSION_LOCK:
        definition = _BY_VERSION.get(version_id)
        if definition is not None:
            _BY_VERSION.move_to_end(version_id)
    if definition is None:
        version = session.get(WorkflowVersion, version_id)
        assert version is not None, version_id
        definition = definition_of(version)
        with _BY_VERSION_LOCK:
            _BY_VERSION[version_id] = definition
            while len(_BY_VERSION) > 256:
                _BY_VERSION.popitem(last=False)
    return definition


# -- what an attempt is given and gives back ------------------------------------------

@dataclass
class Outcome:
    """What an attempt produced."""

    ok: bool
    output: Any = None
    error: str | None = None
    retriable: bool = True
    defer: float | None = None  # a `delay` task: finish after this many seconds
    await_approval: bool = False  # an `approval` task: wait for a person
    await_input: bool = False  # an `agent` task: wait for an agent's output
    start_child: dict[str, Any] | None = None  # a `workflow` task: the rendered `with`
    skipped: str | None = None  # its `when` was false as it began: the reason
    # What the attempt wrote to its log (``engine.tasklog.kept``): stored with its outcome.
    log: tuple[list[dict[str, str]], int] | None = None

    @classmethod
    def skip(cls, reason: str) -> Outcome:
        return cls(True, skipped=reason)

    @classmethod
    def success(cls, output: Any = None) -> Outcome:
        return cls(True, output=output)

    @classmethod
    def failure(cls, error: str, retriable: bool = True) -> Outcome:
        return cls(False, error=error, retriable=retriable)


@dataclass
class AttemptContext:
    attempt_id: str
    number: int
    run_id: str
    task: dsl.TaskSpec
    definition: dsl.WorkflowDefinition
    scope: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    # The attempt that makes a for_each task's elements (``foreach.evaluate``, then
    # ``runner.record_expansion``): it runs nothing of the task's type.
    expands: bool = False
    # The attempt's log (``engine.tasklog``), made when its type runs (``jobs.execute``).
    log: Writer | None = None
    # The run's team (or, for a step tested without a run, ``engine.steptest``, the
    # workflow's): whose connections the attempt may use.
    team_id: str | None = None
    # A task's own attempt: not an element's, nor an undo step's (``record`` takes its
    # success).
    plain: bool = False


# -- the run's lock and what expressions see ------------------------------------------

def lock_run(session: DbSession, run_id: str) -> Run:
    # No joined eager loads here: PostgreSQL refuses FOR UPDATE across an outer join.
    # populate_existing: a run read earlier in the transaction gets the locked row's values.
    stmt = (select(Run).options(lazyload("*")).where(Run.id == run_id).with_for_update(of=Run)
            .execution_options(populate_existing=True))
    return session.execute(stmt).scalar_one()


# Runs whose trigger carried a payload (``Run.trigger_payload``, ``trigger.payload``).
PAYLOAD_TRIGGERS = frozenset({"webhook", "event"})
_LISTENED = select(EventTrigger.id).where(
    EventTrigger.on_workflow_id == bindparam("workflow_id"), EventTrigger.enabled.is_(True)
).limit(1)
_SCOPE = select(TaskRun.task_id, TaskRun.output, TaskRun.status, TaskRun.error).where(
    TaskRun.run_id == bindparam("run_id"), TaskRun.kind == TaskKind.TASK
).order_by(TaskRun.position)
_SCOPE_OF = _SCOPE.where(TaskRun.task_id.in_(bindparam("task_ids", expanding=True)))


def scope_for(session: DbSession, run: Any, reads: frozenset[str] | None,
              secrets: frozenset[str] | None = frozenset(),
              settings: EngineSettings | None = None) -> dict[str, Any]:
    """What expressions see: params, the tasks an expression reads (``Plan.reads``;
    ``None``: all of them) read in one statement, none when it reads no task; the run;
    and the run's team's secrets it reads (``Plan.secrets``), decrypted, none when it
    reads none. ``run``: a ``Run``, or any row with its ``id``, ``team_id``, ``params``
    and ``trigger``. ``settings``: the keys of the secrets, when read outside a unit of
    work (``masking.secret_values``)."""
    rows: Any = ()
    if reads is None or reads:
        outbox.flush(session)  # a record's held writes (``engine.writes``): its output
    if reads is None:
        rows = session.execute(_SCOPE, {"run_id": run.id}).all()
    elif reads:
        rows = session.execute(_SCOPE_OF, {"run_id": run.id, "task_ids": sorted(reads)}).all()
    scope = _scope(run, rows)
    if run.trigger in PAYLOAD_TRIGGERS:  # only these runs carry one: one read, then
        scope["trigger"]["payload"] = session.execute(
            select(Run.trigger_payload).where(Run.id == run.id)).scalar()
    if secrets is None or secrets:
        scope["secrets"] = masking.secret_values(session, run.team_id, secrets, settings)
    return scope


def _scope(run: Any, tasks: Iterable[Any]) -> dict[str, Any]:
    return {
        "params": run.params or {},
        "tasks": {task_id: {"output": output, "status": status, "error": error}
                  for task_id, output, status, error in tasks},
        "run": {"id": run.id, "trigger": run.trigger,
                "scheduled_for": iso(getattr(run, "scheduled_for", None))},
        "trigger": {"payload": None},
        "secrets": {},
    }


# -- attempts and tasks ---------------------------------------------------------------

def new_attempt(session: DbSession, task: TaskRun, spec: dsl.TaskSpec,
                definition: dsl.WorkflowDefinition, status: AttemptStatus,
                delay: float = 0.0, item: TaskItem | None = None) -> str:
    """The next attempt of a task, or of one for_each element (``item``), sent once the
    transaction commits (``outbox``); its id.

    The id is made here, so nothing is flushed: the rows go in at the next flush, many
    attempts in one statement."""
    plan = plan_of(definition)
    own = plan.specs.get(spec.id) is spec
    queue = plan.queues[spec.id] if own else dsl.effective_queue(spec, definition.defaults)
    timeout = plan.timeouts[spec.id] if own else dsl.effective_timeout(spec, definition.defaults)
    owner: TaskRun | TaskItem = item if item is not None else task
    owner.attempts += 1
    if item is not None:
        task.attempts += 1  # the task's count is the total over its elements
    attempt = TaskAttempt(
        id=new_id(), task_run_id=task.id, item_id=item.id if item is not None else None,
        number=owner.attempts, status=status, queue=queue,
        not_before=now() + dt.timedelta(seconds=delay) if delay else None,
    )
    session.add(attempt)
    owner.current_attempt_id = attempt.id
    outbox.of(session).send(Send(attempt.id, queue, delay=delay, timeout=timeout,
                                 instant=sends_instant(spec)))
    return attempt.id


def finish_task(task: TaskRun, status: TaskStatus, error: str | None = None,
                reason: str | None = None) -> None:
    task.status = status.value
    task.finished_at = now()
    if error is not None:
        task.error = error
    if reason is not None:
        task.reason = reason


# -- the one retry decision -----------------------------------------------------------

@dataclass(frozen=True)
class RetryDecision:
    """After a failed attempt: ``again`` after ``wait`` seconds, or finish (failed)."""

    again: bool
    wait: float = 0.0


FINISH = RetryDecision(False)


def retry_decision(spec: dsl.TaskSpec, definition: dsl.WorkflowDefinition, tries: int,
                   retriable: bool) -> RetryDecision:
    """DSL.md, ``retry``: another attempt while the failure is retriable and fewer than
    ``max_attempts`` were made, after the policy's backoff. ``tries``: attempts made
    since the last manual retry, which gives a fresh budget and a fresh backoff."""
    policy = dsl.effective_retry(spec, definition.defaults)
    if retriable and tries < policy.max_attempts:
        return RetryDecision(True, policy.wait_seconds(tries))
    return FINISH


def after_failure(session: DbSession, task: TaskRun, spec: dsl.TaskSpec,
                  definition: dsl.WorkflowDefinition, outcome: Outcome,
                  item: TaskItem | None = None) -> bool:
    """A failed attempt of ``task`` (or of its element ``item``): the retry decision.
    Another attempt is queued after its wait (the owner is ``retrying``) and False is
    returned, or True: the owner is finished, failed (the caller records that)."""
    owner: TaskRun | TaskItem = item if item is not None else task
    decision = retry_decision(spec, definition, owner.attempts - owner.retry_base,
                              outcome.retriable)
    if not decision.again:
        return True
    owner.status = TaskStatus.RETRYING.value
    new_attempt(session, task, spec, definition, AttemptStatus.SCHEDULED, decision.wait, item)
    return False


# -- a run becomes running --------------------------------------------------------------

_AT = bindparam("at", type_=TaskAttempt.started_at.type)
_BEGIN_ATTEMPT = update(TaskAttempt).where(TaskAttempt.id == bindparam("attempt_id")).values(
    status=AttemptStatus.RUNNING, started_at=_AT, worker=bindparam("by"))
_BEGIN_TASK = update(TaskRun).where(TaskRun.id == bindparam("row")).values(
    status=TaskStatus.RUNNING.value, started_at=func.coalesce(TaskRun.started_at, _AT))
_BEGIN_ITEM = update(TaskItem).where(TaskItem.id == bindparam("item")).values(
    status=TaskStatus.RUNNING.value, started_at=func.coalesce(TaskItem.started_at, _AT))
# The first attempt of a run to begin makes it running (it was queued since its start,
# or since a retry); its first start time is kept across retries.
_RUN_BEGINS = update(Run).where(Run.id == bindparam("run"),
                                Run.status == RunStatus.QUEUED.value).values(
    status=RunStatus.RUNNING.value,
    started_at=func.coalesce(Run.started_at, bindparam("at", type_=Run.started_at.type)))


# PostgreSQL writes the attempt and its task in one statement (a data-modifying WITH),
# prepared on each connection (``engine.prepared``).
_BEGIN_BOTH = prepared.Statement(
    "apg_begin_write", _BEGIN_TASK.add_cte(_BEGIN_ATTEMPT.cte("begun_attempt")))


def mark_running(conn: Any, attempt_id: str, task_row: str, at: dt.datetime,
                 worker: str | None, item_id: str | None = None) -> None:
    """The attempt, its task (and element) are running from ``at``."""
    if conn.dialect.name == "postgresql":
        prepared.execute(conn, (_BEGIN_BOTH, {"attempt_id": attempt_id, "row": task_row,
                                              "at": at, "by": worker}))
    else:
        conn.execute(_BEGIN_ATTEMPT, {"attempt_id": attempt_id, "at": at, "by": worker})
        conn.execute(_BEGIN_TASK, {"row": task_row, "at": at})
    if item_id:
        conn.execute(_BEGIN_ITEM, {"item": item_id, "at": at})


def run_begins(conn: Any, run_id: str, at: dt.datetime) -> None:
    """A queued run's first attempt begins: the run is running from ``at``. The caller
    holds the run's lock exclusively."""
    conn.execute(_RUN_BEGINS, {"run": run_id, "at": at})


# -- max_active_runs -----------------------------------------------------------------

# A queued run has taken its slot once an attempt of it waits for a worker (it is
# ``running`` from the moment a worker begins one); until then it waits for a slot. Only
# attempts that count (a task's or an element's current one): a failed for_each can
# leave an element's queued attempt behind, which a retry replaces.
_ADMITTED = (
    select(TaskAttempt.id).join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
    .outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id)
    .where(TaskRun.run_id == Run.id,
           TaskAttempt.status.in_((AttemptStatus.QUEUED, AttemptStatus.SCHEDULED)),
           or_(TaskAttempt.id == TaskRun.current_attempt_id,
               TaskAttempt.id == TaskItem.current_attempt_id))
    .exists()
)


def admitted(session: DbSession, run_id: str) -> bool:
    """Whether a queued run holds its slot (see ``_ADMITTED``)."""
    return bool(session.execute(select(_ADMITTED.where(Run.id == run_id))).scalar())


def active_runs(session: DbSession, workflow_id: str) -> int:
    """Runs of the workflow that hold a ``max_active_runs`` slot: running, paused, or
    queued with their first tasks sent."""
    return int(session.execute(
        select(func.count()).select_from(Run).where(
            Run.workflow_id == workflow_id,
            or_(Run.status.in_([RunStatus.RUNNING.value, RunStatus.PAUSED.value]),
                and_(Run.status == RunStatus.QUEUED.value, _ADMITTED)),
        )
    ).scalar_one())


def below_limit(session: DbSession, workflow_id: str, limit: int | None) -> bool:
    """Whether a new run of the workflow may take a slot now (else it waits queued)."""
    return not limit or active_runs(session, workflow_id) < limit


def waiting_runs(session: DbSession, workflow_id: str, free: int) -> list[Run]:
    """The oldest ``free`` runs of the workflow that wait for a slot, locked."""
    return list(session.execute(
        select(Run).where(Run.workflow_id == workflow_id, Run.status == RunStatus.QUEUED.value,
                          ~_ADMITTED)
        .order_by(Run.created_at, Run.id).limit(max(0, free))
        .options(lazyload("*")).with_for_update(of=Run)
    ).scalars().all())


# -- what operators read ----------------------------------------------------------------

_FIRST_FAILURE = (
    select(TaskRun.task_id, TaskRun.error)
    .where(TaskRun.run_id == bindparam("run_id"), TaskRun.kind == TaskKind.TASK,
           TaskRun.status == TaskStatus.FAILED.value)
    .order_by(func.coalesce(TaskRun.finished_at, TaskRun.started_at), TaskRun.position)
    .limit(1)
)
ERROR_CHARS = 300


def log_started(session: DbSession, run: Run, workflow: str) -> None:
    """``run <id> started: workflow 'name' vN, api by alice`` once the start commits."""
    origin = (f"sub-workflow of run {run.parent_run_id}" if run.parent_run_id
              else f"{run.trigger} by {run.created_by}")
    outbox.of(session).log(logging.INFO, f"run {run.id} started: workflow {workflow!r} "
                                         f"v{run.workflow_version}, {origin}")


def note_finished(session: DbSession, run: Run) -> None:
    """A run ended: when a run-finished trigger listens to its workflow, leave a
    ``RunEvent`` in this transaction (the scheduler starts what it triggers, evaluating
    its params outside any lock: ``triggers.events``). One indexed probe otherwise."""
    if session.execute(_LISTENED, {"workflow_id": run.workflow_id}).first() is not None:
        session.add(RunEvent(run_id=run.id))


def log_finished(session: DbSession, run: Run, workflow: str) -> None:
    """``run <id> finished: succeeded in 1.2s (workflow 'name' vN)`` once the end commits;
    a failed run at WARNING, with its first failed task's error (one statement)."""
    began = run.started_at or run.created_at
    took = f" in {(run.finished_at - began).total_seconds():.1f}s" \
        if began and run.finished_at else ""
    line = f"run {run.id} finished: {run.status}{took} (workflow {workflow!r} " \
           f"v{run.workflow_version})"
    if run.status != RunStatus.FAILED:
        outbox.of(session).log(logging.INFO, line)
        return
    failure = session.execute(_FIRST_FAILURE, {"run_id": run.id}).first()
    why = f"task {failure.task_id}: {failure.error or 'failed'}" if failure else (
        run.error or "see the run's page")
    outbox.of(session).log(logging.WARNING,
                           f"{line}: {why.replace(chr(10), ' ')[:ERROR_CHARS]}")
