"""Schedules (TRIGGERS.md): create, change, pause, preview, and read the tick ledger.

Every function takes the acting user and owns its transaction. A schedule belongs to
its workflow's team: Authors of the team create, change and delete; Operators (and
Authors) pause, resume and backfill; Viewers read; another team's schedule is 404.
Changes are audited by the ORM hook (``blueprint``), refusals by ``call_service``.

A new schedule decides only ticks after it was saved; a change of its timing (cron,
zone, DST policy, start) and a resume start again from now: ticks that fell while it
was paused, or under the old timing, are not caught up (Prefect and n8n do the same;
Airflow's catch-up on unpause surprises its users).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from app.audit.context import acting_as
from app.audit.recorder import update_action
from app.errors import NotFound, ValidationFailed
from app.extensions import DbSession
from app.ids import new_id
from app.security.actor import Actor
from app.security.scope import scoped
from app.times import iso, utcnow
from capability import dsl, service
from capability.engine import state
from capability.triggers import clock, cron, rules, ticker
from capability.triggers.models import Schedule, ScheduleTick

PREVIEW_MAX = 50
TIMING = ("cron", "timezone", "dst_missing", "dst_repeated", "start_at")


class DstIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    missing: Literal["shift", "skip"] = "shift"
    repeated: Literal["first", "last", "both"] = "first"


class ScheduleIn(BaseModel):
    """The body of ``POST /api/v1/schedules/`` and ``PUT .../<id>`` (a whole schedule)."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(min_length=1, max_length=36)
    cron: str = Field(min_length=1, max_length=255)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    catchup: Literal["none", "latest", "all"] = "latest"
    catchup_window: str = Field(default="1d", max_length=16)
    overlap: Literal["allow", "skip", "buffer_one", "cancel_other"] = "skip"
    jitter: str = Field(default="0s", max_length=16)
    dst: DstIn = Field(default_factory=DstIn)
    description: str = Field(default="", max_length=2000)

    @field_validator("start_at", "end_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2027-01-01T00:00:00Z")
        return value.astimezone(dt.UTC) if value is not None else None


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=255)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    dst: DstIn = Field(default_factory=DstIn)
    start_at: dt.datetime | None = None
    count: int = Field(default=5, ge=1, le=PREVIEW_MAX)


def _timing_errors(expr: str, timezone: str, **durations: str) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    try:
        cron.check(expr)
    except cron.CronError as exc:
        errors.append({"path": "cron", "message": str(exc)})
    try:
        cron.zone(timezone)
    except cron.CronError as exc:
        errors.append({"path": "timezone", "message": str(exc)})
    for name, value in durations.items():
        try:
            cron.duration(value, name)
        except cron.CronError as exc:
            errors.append({"path": name, "message": str(exc)})
    return errors


def preview(data: PreviewIn, now: dt.datetime | None = None) -> list[str]:
    """The next ``count`` fire times (ISO with the zone's offset); 422 naming the field."""
    errors = _timing_errors(data.cron, data.timezone)
    if errors:
        raise ValidationFailed("Invalid schedule", errors)
    after = data.start_at or now or clock.now()
    if after.tzinfo is None:
        raise ValidationFailed("Invalid schedule", [
            {"path": "start_at", "message": "needs a UTC offset"}])
    tz = cron.zone(data.timezone)
    return [iso_in(t, tz) for t in cron.fire_times(
        data.cron, data.timezone, after - dt.timedelta(microseconds=1), data.count,
        data.dst.missing, data.dst.repeated)]


def iso_in(at: dt.datetime, tz: Any) -> str:
    return at.astimezone(tz).isoformat()


def _check(session: DbSession, actor: Actor, data: ScheduleIn) -> Any:
    """The workflow (Author of its team), or 422 with every error of the body."""
    workflow = service.get_workflow(session, actor, data.workflow_id)
    rules.require(actor, workflow.team_id, rules.EDIT, "change its schedules")
    errors = _timing_errors(data.cron, data.timezone, catchup_window=data.catchup_window,
                            jitter=data.jitter)
    if data.start_at and data.end_at and data.end_at <= data.start_at:
        errors.append({"path": "end_at", "message": "must be after start_at"})
    definition = state.definition_of(service.version_of(session, workflow))
    _, param_errors = dsl.validate_params(definition, data.params)
    errors += [{"path": f"params.{e['path']}" if e.get("path") not in (None, "", "$")
                else "params", "message": e["message"]} for e in param_errors]
    if not errors and not cron.fire_times(data.cron, data.timezone, clock.now(), 1,
                                          data.dst.missing, data.dst.repeated,
                                          end=data.end_at):
        errors.append({"path": "cron", "message": "never fires (no such date, or every "
                                                  "tick is after end_at)"})
    if errors:
        raise ValidationFailed("Invalid schedule", errors)
    return workflow


def _apply(schedule: Schedule, data: ScheduleIn) -> None:
    schedule.cron = cron.check(data.cron)
    schedule.timezone = data.timezone
    schedule.params = data.params
    schedule.enabled = data.enabled
    schedule.start_at, schedule.end_at = data.start_at, data.end_at
    schedule.catchup, schedule.catchup_window = data.catchup, data.catchup_window
    schedule.overlap, schedule.jitter = data.overlap, data.jitter
    schedule.dst_missing, schedule.dst_repeated = data.dst.missing, data.dst.repeated
    schedule.description = data.description


def create_schedule(session: DbSession, actor: Actor, data: ScheduleIn) -> Schedule:
    workflow = _check(session, actor, data)
    now = clock.now()
    with acting_as(actor):
        # The id now: the jitter of each tick is a hash of it (``ticker.jitter_of``).
        schedule = Schedule(id=new_id(), workflow_id=workflow.id, team_id=workflow.team_id,
                            decided_until=now, created_by=actor.username,
                            updated_by=actor.username)
        _apply(schedule, data)
        schedule.next_due = ticker.next_due(schedule, now)
        session.add(schedule)
        session.commit()
    return schedule


def get_schedule(session: DbSession, actor: Actor, schedule_id: str) -> Schedule:
    found = session.execute(scoped(select(Schedule), Schedule, actor)
                            .where(Schedule.id == schedule_id)).scalar()
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return found


def list_schedules(session: DbSession, actor: Actor, workflow_id: str | None = None,
                   team: str | None = None, enabled: bool | None = None) -> list[Schedule]:
    query = scoped(select(Schedule), Schedule, actor).order_by(Schedule.created_at)
    if workflow_id:
        query = query.where(Schedule.workflow_id == workflow_id)
    if team:
        query = query.where(Schedule.team_id == service.team_by_name(session, actor, team).id)
    if enabled is not None:
        query = query.where(Schedule.enabled == enabled)
    return list(session.execute(query).scalars())


def update_schedule(session: DbSession, actor: Actor, schedule_id: str,
                    data: ScheduleIn) -> Schedule:
    schedule = get_schedule(session, actor, schedule_id)
    rules.require(actor, schedule.team_id, rules.EDIT, "change its schedules")
    if data.workflow_id != schedule.workflow_id:
        raise ValidationFailed("Invalid schedule", [
            {"path": "workflow_id", "message": "a schedule's workflow does not change"}])
    _check(session, actor, data)
    now = clock.now()
    before = tuple(getattr(schedule, name) for name in TIMING)
    with acting_as(actor):
        _apply(schedule, data)
        if tuple(getattr(schedule, name) for name in TIMING) != before:
            schedule.decided_until = max(schedule.decided_until, now)
        schedule.updated_by, schedule.updated_at = actor.username, utcnow()
        schedule.next_due = ticker.next_due(schedule, now)
        session.commit()
    return schedule


def delete_schedule(session: DbSession, actor: Actor, schedule_id: str) -> None:
    schedule = get_schedule(session, actor, schedule_id)
    rules.require(actor, schedule.team_id, rules.EDIT, "delete its schedules")
    with acting_as(actor):
        session.delete(schedule)
        session.commit()


def set_paused(session: DbSession, actor: Actor, schedule_id: str, paused: bool) -> Schedule:
    """Pause or resume (Operator or Author). A resume starts from now: what fell due
    while paused is not caught up."""
    schedule = get_schedule(session, actor, schedule_id)
    rules.require(actor, schedule.team_id, rules.CONTROL,
             "pause or resume its schedules")
    now = clock.now()
    with acting_as(actor), update_action("pause" if paused else "resume"):
        if schedule.paused != paused:
            schedule.paused = paused
            if not paused:
                schedule.decided_until = max(schedule.decided_until, now)
            schedule.updated_by, schedule.updated_at = actor.username, utcnow()
        schedule.next_due = ticker.next_due(schedule, now)
        session.commit()
    return schedule


def ticks(session: DbSession, actor: Actor, schedule_id: str, limit: int = 100,
          offset: int = 0) -> tuple[int, list[ScheduleTick]]:
    """The ledger, newest first: (total, a page)."""
    schedule = get_schedule(session, actor, schedule_id)
    from sqlalchemy import func

    total = session.execute(select(func.count()).select_from(ScheduleTick).where(
        ScheduleTick.schedule_id == schedule.id)).scalar_one()
    rows = session.execute(select(ScheduleTick).where(
        ScheduleTick.schedule_id == schedule.id).order_by(
        ScheduleTick.scheduled_for.desc()).limit(limit).offset(offset)).scalars()
    return int(total), list(rows)


def tick_dict(tick: ScheduleTick) -> dict[str, Any]:
    return {"scheduled_for": iso(tick.scheduled_for), "decided_at": iso(tick.decided_at),
            "outcome": tick.outcome, "run_id": tick.run_id, "reason": tick.reason}


def schedule_dict(session: DbSession, schedule: Schedule,
                  now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or clock.now()
    tz = cron.zone(schedule.timezone)
    upcoming: list[str] = []
    if schedule.enabled and not schedule.paused and not schedule.disabled_reason:
        after = max(schedule.decided_until, now)
        if schedule.start_at is not None and schedule.start_at > after:
            after = schedule.start_at - dt.timedelta(microseconds=1)
        upcoming = [iso_in(t, tz) for t in cron.fire_times(
            schedule.cron, schedule.timezone, after, 5, schedule.dst_missing,
            schedule.dst_repeated, end=schedule.end_at)]
    last = session.execute(select(ScheduleTick).where(
        ScheduleTick.schedule_id == schedule.id).order_by(
        ScheduleTick.scheduled_for.desc()).limit(1)).scalar()
    return {
        "id": schedule.id, "workflow_id": schedule.workflow_id, "team": schedule.team.name,
        "cron": schedule.cron, "timezone": schedule.timezone, "params": schedule.params,
        "enabled": schedule.enabled, "start_at": iso(schedule.start_at),
        "end_at": iso(schedule.end_at), "catchup": schedule.catchup,
        "catchup_window": schedule.catchup_window, "overlap": schedule.overlap,
        "jitter": schedule.jitter,
        "dst": {"missing": schedule.dst_missing, "repeated": schedule.dst_repeated},
        "description": schedule.description, "next_fire_times": upcoming,
        "last_tick": tick_dict(last) if last is not None else None,
        "paused": schedule.paused, "disabled_reason": schedule.disabled_reason,
        "created_by": schedule.created_by, "updated_by": schedule.updated_by,
        "created_at": iso(schedule.created_at), "updated_at": iso(schedule.updated_at),
    }


def overview(session: DbSession, workflow_ids: list[str],
             now: dt.datetime | None = None) -> dict[str, dict[str, Any]]:
    """For lists of workflows: per id its next scheduled run (ISO, UTC) and its last
    run (``{id, status}``), in two statements whatever the number of workflows."""
    from sqlalchemy import func

    from capability.models import Run

    now = now or clock.now()
    out: dict[str, dict[str, Any]] = {i: {"next_run": None, "last_run": None}
                                      for i in workflow_ids}
    if not workflow_ids:
        return out
    for s in session.execute(select(Schedule).where(
            Schedule.workflow_id.in_(workflow_ids), Schedule.enabled.is_(True),
            Schedule.paused.is_(False), Schedule.disabled_reason.is_(None))).scalars():
        first = cron.fire_times(s.cron, s.timezone, max(s.decided_until, now), 1,
                                s.dst_missing, s.dst_repeated, end=s.end_at)
        seen = out[s.workflow_id]["next_run"]
        if first and (seen is None or first[0] < seen):
            out[s.workflow_id]["next_run"] = first[0]
    newest = (select(Run.workflow_id, func.max(Run.created_at).label("at"))
              .where(Run.workflow_id.in_(workflow_ids), Run.parent_run_id.is_(None))
              .group_by(Run.workflow_id).subquery())
    for run_id, workflow_id, status in session.execute(
            select(Run.id, Run.workflow_id, Run.status).join(
                newest, (Run.workflow_id == newest.c.workflow_id)
                & (Run.created_at == newest.c.at))):
        out[workflow_id]["last_run"] = {"id": run_id, "status": status}
    return out


def of_workflow(session: DbSession, workflow_id: str) -> dict[str, list[Any]]:
    """The triggers of one workflow, for its page (the page checked who may see it)."""
    from capability.models import EventTrigger
    from capability.triggers.models import Webhook

    return {
        "schedules": [schedule_dict(session, s) for s in session.execute(
            select(Schedule).where(Schedule.workflow_id == workflow_id)
            .order_by(Schedule.created_at)).scalars()],
        "webhooks": list(session.execute(select(Webhook).where(
            Webhook.workflow_id == workflow_id).order_by(Webhook.created_at)).scalars()),
        "events": list(session.execute(select(EventTrigger).where(
            EventTrigger.workflow_id == workflow_id).order_by(EventTrigger.created_at))
            .scalars()),
    }
