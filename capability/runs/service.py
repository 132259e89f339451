"""Runs: start one, control one, answer an approval, read one. Every function takes
the acting user, and owns its transaction: it commits, and what the engine made ready
is sent after the commit (``engine.outbox``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from app.audit.recorder import build_event, record
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.extensions import DbSession
from app.security.actor import SYSTEM, Actor
from app.security.roles import AUTHOR, OPERATOR
from app.security.scope import scoped
from app.times import iso
from capability import dsl, service
from capability.engine import controls, outbox, snapshot, state, subruns
from capability.engine.decide import controls_over, unknown_queues
from capability.engine.dispatch import Dispatcher
from capability.models import Run, TaskItem, TaskKind, TaskRun, Workflow
from capability.runs import starts

# Who may ask for a run (``Run.trigger``); the engine's own sub-workflow runs say
# "workflow".
TRIGGERS = ("manual", "api", "schedule", "backfill", "webhook", "event", "mcp")


class StartRunIn(BaseModel):
    """The body of ``POST /api/v1/workflows/<id>/runs``."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)


class AnswerIn(BaseModel):
    """The body of an approval's answer."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=4000)


def may_operate(actor: Actor, team_id: str) -> bool:
    """Operators and Authors of the run's team, and Admin: who may start and control
    runs and answer approvals (API.md, roles)."""
    return actor.is_admin or (bool({OPERATOR, AUTHOR} & actor.roles)
                              and team_id in actor.team_ids)


def _require_operator(actor: Actor, team_id: str, what: str) -> None:
    if not may_operate(actor, team_id):
        raise Forbidden(f"Only an {OPERATOR} or {AUTHOR} of the workflow's team may {what}")


def start_run(
    session: DbSession, actor: Actor, dispatcher: Dispatcher, workflow_id: str,
    body: StartRunIn | None = None, trigger: str = "api",
) -> tuple[Run, bool]:
    """Create a run of the current version and queue its first tasks.

    Returns ``(run, created)``: the same idempotency key again gives the first run back.
    """
    body = body or StartRunIn()
    workflow = service.get_workflow(session, actor, workflow_id)
    _require_operator(actor, workflow.team_id, "start runs")
    key = body.idempotency_key
    if key is not None:
        existing = _by_key(session, workflow.id, key)
        if existing is not None:
            return existing, False
    version = service.version_of(session, workflow)
    definition = state.definition_of(version)
    resolved, errors = dsl.validate_params(definition, body.params)
    errors = list(errors) + unknown_queues(definition, dispatcher.settings.queues)
    if errors:
        raise ValidationFailed("The run cannot start", errors)
    outbox.begin(session, dispatcher)
    try:
        # Lock the workflow so concurrent starts agree on max_active_runs, and on the key:
        # a start with the same key that committed while we waited is seen now (and
        # answered with its run, whatever the quotas say now).
        _lock(session, workflow)
        if key is not None:
            existing = _by_key(session, workflow.id, key)
            if existing is not None:
                outbox.rollback(session)
                return existing, False
        run = _open(session, actor, dispatcher, workflow, version, resolved,
                    trigger=trigger, key=key)
        box = outbox.commit(session, deliver=False)
    except IntegrityError:
        # The same key raced us where the workflow's lock does not hold (SQLite has no
        # FOR UPDATE): the other request's run wins.
        outbox.rollback(session)
        existing = _by_key(session, workflow.id, key) if key is not None else None
        if existing is None:
            raise
        return existing, False
    except BaseException:
        outbox.rollback(session)
        raise
    _deliver(box)
    return run, True


def _lock(session: DbSession, workflow: Workflow) -> None:
    session.execute(select(Workflow.id).where(Workflow.id == workflow.id).with_for_update())


def _open(session: DbSession, actor: Actor, dispatcher: Dispatcher, workflow: Workflow,
          version: Any, resolved: dict[str, Any], *, trigger: str,
          key: str | None = None) -> Run:
    """A person's run, in the caller's transaction (the workflow's row locked): a
    refusal by a team quota is raised (429)."""
    out = starts.open_many(session, dispatcher, [starts.Start(
        workflow, resolved, trigger, actor=actor, key=key, resolved=resolved,
        version=version)], locked=True)[0]
    if isinstance(out, starts.NotStarted):
        raise out.cause or Conflict(str(out))
    return out


def cancel_for_trigger(session: DbSession, run_id: str, who: str) -> None:
    """Cancel a run (and its sub-workflow runs) in the caller's transaction: a
    schedule's ``overlap: cancel_other``."""
    actor = replace(SYSTEM, username=who)
    for target in (run_id, *subruns.live_children(session, run_id)):
        run = session.get(Run, target)
        if run is None or run.status in dsl.FINISHED_RUN_STATUSES:
            continue
        before = run.status
        done = controls.cancel(session, target)
        record(session, _event(actor, "cancel", done, before, reason=f"{who}: overlap"))


def _deliver(box: outbox.Outbox) -> None:
    """After the commit, hand what it made ready to Redis. The answer no longer depends
    on it: what could not be sent is queued in the database, and the reaper sends it
    once Redis answers again (a client must not read a committed change as a failure,
    and create it twice by retrying)."""
    box.deliver(tolerant=True)


def _by_key(session: DbSession, workflow_id: str, key: str) -> Run | None:
    return session.execute(
        select(Run).where(Run.workflow_id == workflow_id, Run.idempotency_key == key)
    ).scalar()


def get_run(session: DbSession, actor: Actor, run_id: str) -> Run:
    run = session.execute(scoped(select(Run), Run, actor).where(Run.id == run_id)).scalar()
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


CONTROLS = {
    "cancel": controls.cancel, "pause": controls.pause, "resume": controls.resume,
    "retry": controls.retry,
}


def _event(actor: Actor, action: str, run: Run, before: str, **after: Any) -> dict[str, Any]:
    return build_event(
        actor, action, "run", run.id, team=run.team.name, tenant=run.team.tenant.name,
        before={"status": before}, after={"status": run.status, **after},
    )


def control(
    session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str, action: str
) -> Run:
    """cancel | pause | resume | retry (API.md, "Runs"); Operators and Authors of the
    team. Refused with the reason of ``controls.controls_of`` when the run does not
    allow it now."""
    if action not in CONTROLS:
        raise ValidationFailed(f"Unknown control {action!r}", [
            {"path": "action", "message": f"one of {', '.join(CONTROLS)}"}])
    run = get_run(session, actor, run_id)
    _require_operator(actor, run.team_id, f"{action} runs")
    before = run.status
    outbox.begin(session, dispatcher)
    try:
        done = CONTROLS[action](session, run.id)
        record(session, _event(actor, action, done, before))
        box = outbox.commit(session, deliver=False)
    except BaseException:
        outbox.rollback(session)
        raise
    _deliver(box)
    if action == "cancel":
        # Sub-workflow runs go with their parent, each in its own transaction.
        for child_id in subruns.live_children(session, run.id):
            try:
                control(session, actor, dispatcher, child_id, "cancel")
            except Conflict:
                pass  # it ended meanwhile
    return done


def answer_approval(
    session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str, task_id: str,
    approve: bool, body: AnswerIn | None = None,
) -> Run:
    run = get_run(session, actor, run_id)
    _require_operator(actor, run.team_id, "answer approvals")
    comment = (body or AnswerIn()).comment
    # Rendered (if it must be) before the run is locked: never an expression under a lock.
    legacy = controls.legacy_approvers(session, run, task_id, dispatcher.settings)
    before = run.status
    outbox.begin(session, dispatcher)
    try:
        done = controls.answer_approval(
            session, run.id, task_id, actor.username, actor.roles, approve, comment, legacy)
        action = "approve" if approve else "reject"
        record(session, _event(actor, action, done, before, task=task_id, comment=comment))
        box = outbox.commit(session, deliver=False)
    except BaseException:
        outbox.rollback(session)
        raise
    _deliver(box)
    return done


# -- reading a run ----------------------------------------------------------------------

# Where a cut value is fetched whole (the API's path; the page links to it too).
OUTPUT_PATH = "/api/v1/runs/{run}/tasks/{task}/output"


class PageIn(BaseModel):
    """Which elements and attempts of each task a run's or a task's JSON shows."""

    model_config = ConfigDict(extra="forbid")

    items_offset: int = Field(default=0, ge=0)
    items_limit: int = Field(default=snapshot.PAGE, ge=0, le=snapshot.MAX_PAGE)
    attempts_offset: int = Field(default=0, ge=0)
    attempts_limit: int = Field(default=snapshot.PAGE, ge=0, le=snapshot.MAX_PAGE)

    def items(self) -> snapshot.Page:
        return snapshot.Page(self.items_offset, self.items_limit)

    def attempts(self) -> snapshot.Page:
        return snapshot.Page(self.attempts_offset, self.attempts_limit)


FIRST_PAGE = PageIn()
_KIND_COUNTS = (select(TaskRun.kind, TaskRun.status, func.count())
                .where(TaskRun.run_id == bindparam("run_id"))
                .group_by(TaskRun.kind, TaskRun.status))


def read_run(session: DbSession, run: Run, page: PageIn = FIRST_PAGE,
             max_value: int | None = None) -> list[snapshot.TaskRead]:
    """The run's tasks as its JSON and its page show them (``engine.snapshot``)."""
    return snapshot.read(session, run.id, full=True, max_value=max_value,
                         items=page.items(), attempts=page.attempts(),
                         elements=state.plan_for(session, run).has_elements)


def run_dict(session: DbSession, run: Run, actor: Actor | None = None,
             with_tasks: bool = True, page: PageIn = FIRST_PAGE,
             max_value: int | None = None,
             reads: list[snapshot.TaskRead] | None = None) -> dict[str, Any]:
    """A run as the API shows it (API.md, "Runs"): with ``controls``, the controls
    ``actor`` may use on it now (from the rule the engine enforces), and
    ``retry_blocked``, why a failed run cannot be retried.

    A constant number of statements whatever the size of the run (``engine.snapshot``):
    each task shows a ``page`` of its elements and attempts with their totals, and an
    output longer than ``max_value`` characters of JSON is cut (``output_cut``).
    ``with_tasks=False``: the summary a start answers with, its task rows counted in one
    statement (``task_counts`` instead of the tasks). ``reads``: the run's ``read_run`` (the
    page shares it with the live state)."""
    if reads is None:
        reads = read_run(session, run, page, max_value) if with_tasks else []
    # The summary counts the task rows in SQL: a start has not loaded them (a 1,000-task
    # DAG's rows as ORM objects cost more than the whole start).
    kinds = ([(t.row.kind, t.row.status, 1) for t in reads] if with_tasks else
             session.execute(_KIND_COUNTS, {"run_id": run.id}).all())
    rule = controls_over(run.status, ((kind, status) for kind, status, _ in kinds),
                         lambda: state.admitted(session, run.id))
    out: dict[str, Any] = {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "workflow": run.workflow.name,
        "workflow_version": run.workflow_version,
        "team": run.team.name,
        "status": run.status,
        "params": run.params,
        "trigger": run.trigger,
        # TRIGGERS.md: what started it (null for manual and api starts).
        "trigger_source": ({"type": run.trigger_source_type, "id": run.trigger_source_id}
                           if run.trigger_source_type else None),
        "scheduled_for": iso(run.scheduled_for),
        "delivery_id": run.delivery_id,
        "depth": run.depth,
        "idempotency_key": run.idempotency_key,
        "created_by": run.created_by,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "controls": list(rule.allowed) if actor and may_operate(actor, run.team_id) else [],
        "retry_blocked": rule.retry_blocked,
    }
    if not with_tasks:
        out["task_counts"] = {status: number for kind, status, number in kinds
                              if kind == TaskKind.TASK}
        return out
    out["tasks"] = [_task_dict(run.id, t) for t in reads if t.row.kind == TaskKind.TASK]
    # CONNECTORS.md: what its attempts cost (LLM_PRICES), summed; null when none did.
    out["cost"] = run.cost
    # The undo steps that ran because the run failed, in the order they ran.
    out["compensations"] = [
        _task_dict(run.id, t) for t in reads if t.row.kind == TaskKind.COMPENSATION
    ]
    return out


def task_dict(session: DbSession, run: Run, task_id: str, page: PageIn = FIRST_PAGE,
              max_value: int | None = None) -> dict[str, Any]:
    """One task of a run with a ``page`` of its elements and attempts (``GET
    /api/v1/runs/<id>/tasks/<task_id>``: the run page's "load more")."""
    reads = [t for t in snapshot.read(session, run.id, full=True, max_value=max_value,
                                      items=page.items(), attempts=page.attempts(),
                                      task_id=task_id) if t.row.kind == TaskKind.TASK]
    if not reads:
        raise NotFound(f"task {task_id} not found in run {run.id}")
    return _task_dict(run.id, reads[0])


def task_output(session: DbSession, run: Run, task_id: str,
                item: int | None = None) -> Any:
    """A task's (or one element's) whole output, however large."""
    task = session.execute(select(TaskRun).where(
        TaskRun.run_id == run.id, TaskRun.task_id == task_id,
        TaskRun.kind == TaskKind.TASK)).scalar()
    if task is None:
        raise NotFound(f"task {task_id} not found in run {run.id}")
    if item is None:
        return task.output
    found = session.execute(select(TaskItem.output).where(
        TaskItem.task_run_id == task.id, TaskItem.index == item)).first()
    if found is None:
        raise NotFound(f"element {item} of task {task_id} not found")
    return found[0]


def _with_value(out: dict[str, Any], row: Any, href: str) -> dict[str, Any]:
    value = snapshot.value_of(row)
    out["output"] = value.value
    if value.cut:
        out["output_cut"] = {"size": value.size, "preview": value.preview, "href": href}
    return out


def _task_dict(run_id: str, read: snapshot.TaskRead) -> dict[str, Any]:
    task = read.row
    href = OUTPUT_PATH.format(run=run_id, task=task.task_id)
    out: dict[str, Any] = {
        "task_id": task.task_id,
        "status": task.status,
        "attempts": task.attempts,
        "output": None,
        "error": task.error,
        "reason": task.reason,
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
    }
    _with_value(out, task, href)
    out["items"] = [
        _with_value({"index": i.index, "status": i.status, "attempts": i.attempts,
                     "error": i.error}, i, f"{href}?item={i.index}")
        for i in read.items
    ]
    out["items_total"] = read.items_total
    out["item_counts"] = read.item_counts
    out["attempt_history"] = [
        {"id": a.id, "number": a.number, "status": a.status, "error": a.error,
         "item": a.item, "worker": a.worker, "started_at": iso(a.started_at),
         "finished_at": iso(a.finished_at)}
        for a in read.attempts
    ]
    out["attempt_history_total"] = read.attempts_total
    if task.prompt is not None:
        out["prompt"] = task.prompt  # an approval's rendered message and approvers
    return out


def controls_of_run(session: DbSession, run: Run) -> controls.Controls:
    """The controls the run allows now, whoever asks (the rule ``control`` enforces)."""
    return controls.controls_for(session, run)


def who_may_answer(approvers: str | None, team: str) -> str:
    """In words, who may answer an approval of the team (the rule of ``may_answer``)."""
    if not approvers:
        return f"any {OPERATOR} or {AUTHOR} of team {team}, and Admins"
    if approvers in (OPERATOR, AUTHOR):
        return f"users with the role {approvers} in team {team}, and Admins"
    return (f"users of team {team} with the role {approvers} who are also an {OPERATOR} or "
            f"{AUTHOR} there, and Admins")


def may_answer(actor: Actor, run: Run, task: dict[str, Any]) -> bool:
    """Whether ``actor`` may approve or reject this waiting approval task (a task of
    ``run_dict``): the rule ``controls.answer_approval`` enforces."""
    approvers = (task.get("prompt") or {}).get("approvers")
    return may_operate(actor, run.team_id) and controls.may_answer(actor.roles, approvers)
