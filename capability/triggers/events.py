"""Event triggers (TRIGGERS.md, "Events"): a run of one workflow ending starts a run of
another; a named event posted to the API starts the runs that listen to it.

Params are rendered over ``event`` (run finished: ``{run_id, workflow, status, params,
outputs}``; named: ``{name, payload}``) under the expression budget and with no
transaction open. A run started by an event carries ``depth`` = its cause's + 1; one
that would pass ``EVENT_MAX_DEPTH`` is not started, and the trigger records why
(``last_refusal``): that is what stops A → B → A.

Exactly once for run-finished triggers: the ending run leaves a ``RunEvent`` in the
transaction that ended it (``engine.state.note_finished``); a scheduler's pass takes it
``FOR UPDATE SKIP LOCKED``, starts the downstream runs with the idempotency key
``event:<event>:<trigger>`` (unique per workflow) and deletes it, all in one
transaction.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import delete, select

from app.audit.context import acting_as
from app.errors import NotFound, ValidationFailed
from app.extensions import DbSession
from app.ids import new_id
from app.security.actor import Actor
from app.security.scope import scoped
from app.times import iso, utcnow
from capability import service
from capability.dsl import FINISHED_RUN_STATUSES
from capability.engine import outbox
from capability.engine.dispatch import Dispatcher
from capability.models import EventTrigger, Run, RunEvent, TaskKind, TaskRun, Workflow
from capability.triggers import rules

log = logging.getLogger("capability.triggers")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
FINISHED = tuple(s.value for s in FINISHED_RUN_STATUSES)
BATCH = 100


class OnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(default=None, max_length=36)
    statuses: list[str] = Field(default_factory=lambda: ["succeeded"], max_length=3)
    event: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _one(self) -> OnIn:
        if (self.workflow_id is None) == (self.event is None):
            raise ValueError("give either workflow_id (a run finished) or event (a named "
                             "event)")
        if self.event is not None and not EVENT_NAME.match(self.event):
            raise ValueError("event: ^[a-z][a-z0-9_.-]{0,127}$")
        bad = [s for s in self.statuses if s not in FINISHED]
        if bad:
            raise ValueError(f"statuses: each one of {', '.join(FINISHED)}, not {bad}")
        return self


class EventTriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(min_length=1, max_length=36)
    on: OnIn
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class EventIn(BaseModel):
    """The body of ``POST /api/v1/events/<name>``."""

    model_config = ConfigDict(extra="forbid")

    team: str = Field(min_length=1, max_length=129)
    payload: Any = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=100)


def _check(session: DbSession, actor: Actor, data: EventTriggerIn) -> Workflow:
    from capability.dsl.expressions import check_syntax, find_expressions

    workflow = service.get_workflow(session, actor, data.workflow_id)
    rules.require(actor, workflow.team_id, rules.EDIT, "change its event triggers")
    errors = [{"path": path, "message": problem}
              for path, text in find_expressions(data.params, "params")
              if (problem := check_syntax(text))]
    if data.on.workflow_id is not None:
        upstream = service.get_workflow(session, actor, data.on.workflow_id)
        if upstream.team_id != workflow.team_id:
            errors.append({"path": "on.workflow_id",
                           "message": "the upstream workflow must be in the same team"})
    if errors:
        raise ValidationFailed("Invalid event trigger", errors)
    return workflow


def _apply(trigger: EventTrigger, data: EventTriggerIn) -> None:
    trigger.on_workflow_id, trigger.on_event = data.on.workflow_id, data.on.event
    trigger.on_statuses = list(dict.fromkeys(data.on.statuses)) if data.on.workflow_id else []
    trigger.params, trigger.enabled = data.params, data.enabled


def create_trigger(session: DbSession, actor: Actor, data: EventTriggerIn) -> EventTrigger:
    workflow = _check(session, actor, data)
    with acting_as(actor):
        trigger = EventTrigger(id=new_id(), workflow_id=workflow.id, team_id=workflow.team_id,
                               created_by=actor.username, updated_by=actor.username)
        _apply(trigger, data)
        session.add(trigger)
        session.commit()
    return trigger


def get_trigger(session: DbSession, actor: Actor, trigger_id: str) -> EventTrigger:
    found = session.execute(scoped(select(EventTrigger), EventTrigger, actor)
                            .where(EventTrigger.id == trigger_id)).scalar()
    if found is None:
        raise NotFound(f"event trigger {trigger_id} not found")
    return found


def list_triggers(session: DbSession, actor: Actor,
                  workflow_id: str | None = None) -> list[EventTrigger]:
    query = scoped(select(EventTrigger), EventTrigger, actor).order_by(EventTrigger.created_at)
    if workflow_id:
        query = query.where(EventTrigger.workflow_id == workflow_id)
    return list(session.execute(query).scalars())


def update_trigger(session: DbSession, actor: Actor, trigger_id: str,
                   data: EventTriggerIn) -> EventTrigger:
    trigger = get_trigger(session, actor, trigger_id)
    rules.require(actor, trigger.team_id, rules.EDIT, "change its event triggers")
    if data.workflow_id != trigger.workflow_id:
        raise ValidationFailed("Invalid event trigger", [
            {"path": "workflow_id", "message": "an event trigger's workflow does not change"}])
    _check(session, actor, data)
    with acting_as(actor):
        _apply(trigger, data)
        trigger.updated_by, trigger.updated_at = actor.username, utcnow()
        session.commit()
    return trigger


def delete_trigger(session: DbSession, actor: Actor, trigger_id: str) -> None:
    trigger = get_trigger(session, actor, trigger_id)
    rules.require(actor, trigger.team_id, rules.EDIT, "delete its event triggers")
    with acting_as(actor):
        session.delete(trigger)
        session.commit()


def trigger_dict(trigger: EventTrigger) -> dict[str, Any]:
    on: dict[str, Any] = ({"workflow_id": trigger.on_workflow_id,
                           "statuses": trigger.on_statuses}
                          if trigger.on_workflow_id else {"event": trigger.on_event})
    return {"id": trigger.id, "workflow_id": trigger.workflow_id, "team": trigger.team.name,
            "on": on, "params": trigger.params, "enabled": trigger.enabled,
            "last_refusal": trigger.last_refusal,
            "last_refusal_at": iso(trigger.last_refusal_at),
            "created_by": trigger.created_by, "updated_by": trigger.updated_by,
            "created_at": iso(trigger.created_at), "updated_at": iso(trigger.updated_at)}


# -- starting runs ---------------------------------------------------------------------

def _render(trigger: EventTrigger, event: dict[str, Any], dispatcher: Dispatcher
            ) -> tuple[dict[str, Any] | None, str | None]:
    # Here, not at import: a web process loads the sandbox only when an event comes.
    from capability.dsl.expressions import ExpressionError, render

    try:
        params = render(trigger.params, {"event": event}, "params",
                        dispatcher.settings.expression_budget)
    except ExpressionError as exc:
        return None, str(exc)
    if not isinstance(params, dict):
        return None, "params must render to an object"
    return params, None


def _refuse(session: DbSession, trigger_id: str, reason: str) -> None:
    trigger = session.get(EventTrigger, trigger_id)
    if trigger is not None:
        trigger.last_refusal, trigger.last_refusal_at = reason, utcnow()
    log.warning("event trigger %s started no run: %s", trigger_id, reason)


def _start_all(session: DbSession, dispatcher: Dispatcher, max_depth: int, depth: int,
               planned: list[tuple[EventTrigger, dict[str, Any] | None, str | None]],
               key: str | None, event: str, who: str, payload: Any = None) -> list[str]:
    """Inside the caller's transaction: a run per trigger, or its refusal recorded."""
    from capability.runs import starts as runs

    started = []
    for trigger, params, problem in planned:
        workflow = session.get(Workflow, trigger.workflow_id)
        if workflow is None or workflow.deleted_at is not None:
            continue
        if depth > max_depth:
            problem = (f"depth {depth} would pass EVENT_MAX_DEPTH ({max_depth}): an event "
                       f"loop? ({event})")
        if problem is None and params is not None:
            try:
                run = runs.open_triggered(
                    session, dispatcher, workflow, params, trigger="event",
                    source=("event_trigger", trigger.id), who=who, depth=depth,
                    key=f"{key}:{trigger.id}" if key else None, payload=payload)
            except runs.NotStarted as exc:
                problem = str(exc)
            else:
                started.append(run.id)
                continue
        _refuse(session, trigger.id, problem or "not started")
    return started


def publish(session: DbSession, actor: Actor, dispatcher: Dispatcher, name: str,
            data: EventIn, max_depth: int) -> list[str]:
    """``POST /api/v1/events/<name>``: the runs it started (Operator or above)."""
    if not EVENT_NAME.match(name):
        raise ValidationFailed("Invalid event", [
            {"path": "name", "message": "^[a-z][a-z0-9_.-]{0,127}$"}])
    team = service.team_by_name(session, actor, data.team)
    rules.require(actor, team.id, rules.CONTROL, "post its events")
    triggers = list(session.execute(select(EventTrigger).where(
        EventTrigger.team_id == team.id, EventTrigger.on_event == name,
        EventTrigger.enabled.is_(True)).order_by(EventTrigger.created_at)).scalars())
    event = {"name": name, "payload": data.payload}
    session.rollback()  # expressions run with no transaction open
    planned = [(t, *_render(t, event, dispatcher)) for t in triggers]
    key = f"event:{name}:{data.idempotency_key}" if data.idempotency_key else None
    outbox.begin(session, dispatcher)
    try:
        started = _start_all(session, dispatcher, max_depth, 1, planned, key,
                             f"event {name}", f"event:{name}", data.payload)
        box = outbox.commit(session, deliver=False)
    except BaseException:
        outbox.rollback(session)
        raise
    box.deliver(tolerant=True)
    return started


def _outputs(session: DbSession, run_id: str) -> dict[str, Any]:
    return {task_id: output for task_id, output in session.execute(
        select(TaskRun.task_id, TaskRun.output).where(
            TaskRun.run_id == run_id, TaskRun.kind == TaskKind.TASK))}


def process(session: DbSession, dispatcher: Dispatcher, max_depth: int) -> int:
    """Start the runs of run-finished triggers for runs that ended (a scheduler's
    pass); how many events were handled."""
    handled = 0
    pending = list(session.execute(select(RunEvent.id, RunEvent.run_id)
                                   .order_by(RunEvent.created_at).limit(BATCH)))
    session.rollback()
    for event_id, run_id in pending:
        run = session.get(Run, run_id)
        if run is None:
            continue
        triggers = list(session.execute(select(EventTrigger).where(
            EventTrigger.on_workflow_id == run.workflow_id, EventTrigger.enabled.is_(True)
        ).order_by(EventTrigger.created_at)).scalars())
        wanted = [t for t in triggers if run.status in t.on_statuses]
        event = {"run_id": run.id, "workflow": run.workflow.name, "status": run.status,
                 "params": run.params, "outputs": _outputs(session, run.id) if wanted else {}}
        depth = run.depth + 1
        session.rollback()  # expressions run with no transaction open
        planned = [(t, *_render(t, event, dispatcher)) for t in wanted]
        outbox.begin(session, dispatcher)
        try:
            query = select(RunEvent.id).where(RunEvent.id == event_id)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            if session.execute(query).first() is None:  # another scheduler has it
                outbox.rollback(session)
                continue
            _start_all(session, dispatcher, max_depth, depth, planned, f"event:{event_id}",
                       f"run {run.id} {run.status}", f"run-finished:{run.id}", event)
            session.execute(delete(RunEvent).where(RunEvent.id == event_id))
            box = outbox.commit(session, deliver=False)
        except BaseException:
            outbox.rollback(session)
            raise
        box.deliver(tolerant=True)
        handled += 1
    return handled
