"""Backfills (TRIGGERS.md, "Backfill"): a run per tick of a schedule's cron in a range.

Created by an Operator or Author of the team, bounded (``max_runs`` ≤ ``BACKFILL_MAX``;
more ticks is a 422 that says how many). The runs are not made at once: each
scheduler pass (``advance``) starts the next ones while the workflow's
``max_active_runs`` has room (at most ``PER_PASS`` a pass when it has no limit), or one
at a time with ``overlap: buffer_one`` or ``skip``: a backfill exists to run its ticks,
so ``skip`` drops none of them (it waits, as ``buffer_one``). Each run's idempotency key
``backfill:<id>:<index>`` makes it start once whichever scheduler gets there.
Cancelling stops the starts and cancels the backfill's unfinished runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select

from app.audit.context import acting_as
from app.audit.recorder import build_event, record
from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import DbSession
from app.ids import new_id
from app.security.actor import Actor
from app.security.scope import scoped
from app.times import iso
from capability import dsl, service
from capability.engine import outbox, state
from capability.engine.dispatch import Dispatcher
from capability.models import Run, Workflow
from capability.triggers import cron, rules
from capability.triggers import service as schedules
from capability.triggers.models import Backfill

PER_PASS = 20  # runs a pass starts for one backfill when the workflow has no limit
FINISHED = tuple(s.value for s in dsl.FINISHED_RUN_STATUSES)


class BackfillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: dt.datetime
    end: dt.datetime
    max_runs: int = Field(default=100, ge=1)
    overlap: Literal["allow", "skip", "buffer_one"] = "allow"
    params: dict[str, Any] | None = None
    dry_run: bool = False

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2027-01-01T00:00:00Z")
        return value.astimezone(dt.UTC)


def _ticks(schedule: Any, start: dt.datetime, end: dt.datetime, limit: int) -> list[str]:
    out: list[str] = []
    for tick in cron.ticks(schedule.cron, schedule.timezone, start - dt.timedelta(
            microseconds=1), schedule.dst_missing, schedule.dst_repeated):
        if tick.at > end or len(out) > limit:
            break
        if tick.kind == "fire":
            out.append(tick.at.isoformat())
    return out


def create_backfill(session: DbSession, actor: Actor, schedule_id: str, data: BackfillIn,
                    limit: int) -> tuple[Backfill | None, int]:
    """The backfill (None for a dry run) and its tick count."""
    schedule = schedules.get_schedule(session, actor, schedule_id)
    rules.require(actor, schedule.team_id, rules.CONTROL, "backfill its schedules")
    errors = []
    if data.end < data.start:
        errors.append({"path": "end", "message": "must not be before start"})
    if data.max_runs > limit:
        errors.append({"path": "max_runs", "message": f"at most BACKFILL_MAX ({limit})"})
    if errors:
        raise ValidationFailed("Invalid backfill", errors)
    ticks = _ticks(schedule, data.start, data.end, data.max_runs)
    if len(ticks) > data.max_runs:
        every = len(_ticks(schedule, data.start, data.end, limit))
        many = f"{every}" if every <= limit else f"more than {limit}"
        raise ValidationFailed("Too many ticks", [{"path": "max_runs", "message": (
            f"the range has {many} ticks, over max_runs ({data.max_runs}): narrow the range "
            "or raise max_runs")}])
    params = dict(schedule.params if data.params is None else data.params)
    workflow = service.get_workflow(session, actor, schedule.workflow_id)
    _, problems = dsl.validate_params(state.definition_of(service.version_of(
        session, workflow)), params)
    if problems:
        raise ValidationFailed("Invalid backfill", [
            {"path": f"params.{p['path']}" if p.get("path") else "params",
             "message": p["message"]} for p in problems])
    if data.dry_run:
        return None, len(ticks)
    with acting_as(actor):
        backfill = Backfill(id=new_id(), schedule_id=schedule.id, workflow_id=workflow.id,
                            team_id=schedule.team_id, start=data.start, end=data.end,
                            overlap=data.overlap, params=params, ticks=ticks,
                            status="running" if ticks else "done", created_by=actor.username)
        session.add(backfill)
        session.flush()
        record(session, build_event(actor, "backfill", "schedule", schedule.id,
                                    team=schedule.team.name, tenant=schedule.team.tenant.name,
                                    after={"backfill": backfill.id, "ticks": len(ticks),
                                           "start": iso(data.start), "end": iso(data.end)}))
        session.commit()
    return backfill, len(ticks)


def get_backfill(session: DbSession, actor: Actor, backfill_id: str) -> Backfill:
    found = session.execute(scoped(select(Backfill), Backfill, actor)
                            .where(Backfill.id == backfill_id)).scalar()
    if found is None:
        raise NotFound(f"backfill {backfill_id} not found")
    return found


def _counts(session: DbSession, backfill_id: str) -> dict[str, int]:
    return {status: int(n) for status, n in session.execute(
        select(Run.status, func.count()).where(Run.trigger_source_id == backfill_id)
        .group_by(Run.status))}


def backfill_dict(session: DbSession, backfill: Backfill) -> dict[str, Any]:
    counts = _counts(session, backfill.id)
    running = sum(n for s, n in counts.items() if s not in FINISHED)
    status = backfill.status
    if status == "running" and backfill.next_index >= len(backfill.ticks) and not running:
        status = "done"
    return {"id": backfill.id, "schedule_id": backfill.schedule_id,
            "start": iso(backfill.start), "end": iso(backfill.end),
            "overlap": backfill.overlap, "total": len(backfill.ticks),
            "created": sum(counts.values()),
            "succeeded": counts.get("succeeded", 0), "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0), "running": running, "status": status,
            "created_by": backfill.created_by, "created_at": iso(backfill.created_at)}


def cancel_backfill(session: DbSession, actor: Actor, dispatcher: Dispatcher,
                    backfill_id: str) -> Backfill:
    from capability.runs import service as runs

    backfill = get_backfill(session, actor, backfill_id)
    rules.require(actor, backfill.team_id, rules.CONTROL, "cancel its backfills")
    if backfill.status != "running":
        raise Conflict(f"The backfill is {backfill.status}; only a running one can be "
                       "cancelled")
    outbox.begin(session, dispatcher)
    try:
        backfill.status = "cancelled"
        for run_id in session.execute(select(Run.id).where(
                Run.trigger_source_id == backfill.id,
                Run.status.not_in(FINISHED))).scalars().all():
            runs.cancel_for_trigger(session, run_id, actor.username)
        record(session, build_event(actor, "cancel", "backfill", backfill.id,
                                    team=backfill.team.name, tenant=backfill.team.tenant.name))
        box = outbox.commit(session, deliver=False)
    except BaseException:
        outbox.rollback(session)
        raise
    box.deliver(tolerant=True)
    return backfill


def _active(session: DbSession, backfill_id: str) -> int:
    return int(session.execute(select(func.count()).select_from(Run).where(
        Run.trigger_source_id == backfill_id, Run.status.not_in(FINISHED))).scalar_one())


def _room(session: DbSession, backfill: Backfill, workflow: Workflow) -> int:
    """How many runs this pass may start."""
    if backfill.overlap in ("buffer_one", "skip"):
        return 0 if _active(session, backfill.id) else 1
    definition = state.definition_of(service.version_of(session, workflow))
    if not definition.max_active_runs:
        return PER_PASS
    active = session.execute(select(func.count()).select_from(Run).where(
        Run.workflow_id == workflow.id, Run.status.not_in(FINISHED))).scalar_one()
    return max(0, min(PER_PASS, definition.max_active_runs - int(active)))


def advance(session: DbSession, dispatcher: Dispatcher) -> int:
    """Start the next runs of every running backfill (a scheduler's pass); how many."""
    from capability.runs import starts as runs

    started = 0
    ids = list(session.execute(select(Backfill.id).where(Backfill.status == "running"))
               .scalars())
    session.rollback()
    for backfill_id in ids:
        outbox.begin(session, dispatcher)
        try:
            query = select(Backfill).where(Backfill.id == backfill_id,
                                           Backfill.status == "running")
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=Backfill)
            backfill = session.execute(query).scalar()
            workflow = session.get(Workflow, backfill.workflow_id) if backfill else None
            if backfill is None or workflow is None:
                outbox.rollback(session)
                continue
            if workflow.deleted_at is not None:
                backfill.status = "cancelled"
            room = _room(session, backfill, workflow) if backfill.status == "running" else 0
            while room > 0 and backfill.next_index < len(backfill.ticks):
                index = backfill.next_index
                try:
                    runs.open_triggered(
                        session, dispatcher, workflow, dict(backfill.params), trigger="backfill",
                        source=("backfill", backfill.id), key=f"backfill:{backfill.id}:{index}",
                        scheduled_for=dt.datetime.fromisoformat(backfill.ticks[index]),
                        who=f"backfill {backfill.id}")
                except runs.NotStarted:
                    break  # a quota: the next pass tries again
                backfill.next_index += 1
                room -= 1
                started += 1
            if backfill.status == "running" and backfill.next_index >= len(backfill.ticks) \
                    and not _active(session, backfill.id):
                backfill.status = "done"
            box = outbox.commit(session, deliver=False)
        except BaseException:
            outbox.rollback(session)
            raise
        box.deliver(tolerant=True)
    return started
