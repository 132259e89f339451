"""Triggers -> Schedules, Webhooks, Event triggers: the pages (TRIGGERS.md, "UI").

Thin over the services the API calls, with the request's actor: every list is the
actor's teams', every change the service's rule (a refused one is flashed and
audited). The schedule form previews its next fire times as you type (static
``triggers.js`` calls ``POST /api/v1/schedules/preview``); a backfill is counted first
(a dry run) and then followed (``GET /api/v1/backfills/<id>``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.views import expose
from pydantic import ValidationError
from sqlalchemy import select
from werkzeug.wrappers import Response

from app.api_support import call_for_page
from app.errors import ServiceError, pydantic_errors
from app.extensions import db
from app.security.actor import Actor
from app.security.request import request_actor
from app.security.scope import scoped
from capability.models import Workflow
from capability.triggers import backfills, cron, events, rules, webhooks
from capability.triggers import service as schedules
from capability.triggers.models import Backfill

T = TypeVar("T")
ZONES = ("UTC", "Europe/Berlin", "Europe/London", "Europe/Paris", "America/New_York",
         "America/Chicago", "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata",
         "Australia/Sydney")


def _call(kind: str, action: str, target: str | None, fn: Callable[[Actor], T]) -> T:
    return call_for_page(action, kind, target, fn, missing="not in your teams, or deleted.",
                         forbidden=True)


def _workflows(actor: Actor) -> list[Workflow]:
    """Live workflows of the teams where the actor is an Author (what a form may pick)."""
    query = scoped(select(Workflow), Workflow, actor).where(Workflow.deleted_at.is_(None))
    found = list(db.session.execute(query.order_by(Workflow.name)).scalars().unique())
    return [w for w in found if rules.may(actor, w.team_id, rules.EDIT)]


def _names(ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = db.session.execute(select(Workflow.id, Workflow.name).where(Workflow.id.in_(ids)))
    return {workflow_id: name for workflow_id, name in rows}


def _json_field(name: str, errors: list[dict[str, str]]) -> Any:
    text = request.form.get(name, "").strip() or "{}"
    try:
        return json.loads(text)
    except ValueError as exc:
        errors.append({"path": name, "message": f"not JSON: {exc}"})
        return {}


def _choices() -> list[Workflow]:
    """The workflows a creation form may pick; 403 when there is none."""
    choices = _workflows(request_actor())
    if not choices:
        abort(403)
    return choices


def _submit(kind: str, body: Callable[[Any], dict[str, Any]], model: Any,
            save: Callable[[Actor, Any], T]) -> tuple[T | None, list[dict[str, str]]]:
    """A creation form's POST: the body built from the form (``params`` as JSON),
    validated by ``model``, saved by the service as the request's actor; or every
    error, nothing saved (a refusal audited)."""
    errors: list[dict[str, str]] = []
    params = _json_field("params", errors)
    try:
        data = model.model_validate(body(params))
        if not errors:
            return _call(kind, "create", None, lambda a: save(a, data)), errors
    except (ValidationError, ServiceError) as exc:
        errors += _refused(exc)
    return None, errors


def _refused(exc: Exception) -> list[dict[str, str]]:
    if isinstance(exc, ValidationError):
        return pydantic_errors(exc)
    errors = list(getattr(exc, "errors", []) or [])
    return errors or [{"path": "", "message": str(exc)}]


class ScheduleView(BaseView):
    route_base = "/triggers/schedules"
    default_view = "list"
    class_permission_name = "Schedules"
    method_permission_name = {"list": "read", "show": "read", "add": "write",
                              "pause": "control", "resume": "control"}

    @expose("/")
    @has_access
    @permission_name("read")
    def list(self) -> str:
        actor = request_actor()
        rows = schedules.list_schedules(db.session, actor)
        names = _names({s.workflow_id for s in rows})
        items = [{**schedules.schedule_dict(db.session, s), "workflow": names.get(s.workflow_id),
                  "may_control": rules.may(actor, s.team_id, rules.CONTROL)} for s in rows]
        return self.render_template("triggers/schedules.html", items=items,
                                    may_add=bool(_workflows(actor)))

    @expose("/new", methods=["GET", "POST"])
    @has_access
    @permission_name("write")
    def add(self) -> str | Response:
        choices, form = _choices(), request.form
        errors: list[dict[str, str]] = []
        if request.method == "POST":
            made, errors = _submit("schedule", lambda params: {
                "workflow_id": form.get("workflow_id", ""), "cron": form.get("cron", ""),
                "timezone": form.get("timezone") or "UTC", "params": params,
                "catchup": form.get("catchup") or "latest",
                "catchup_window": form.get("catchup_window") or "1d",
                "overlap": form.get("overlap") or "skip", "jitter": form.get("jitter") or "0s",
                "dst": {"missing": form.get("dst_missing") or "shift",
                        "repeated": form.get("dst_repeated") or "first"},
                "description": form.get("description", "")}, schedules.ScheduleIn,
                lambda a, data: schedules.create_schedule(db.session, a, data))
            if made is not None:
                flash("Schedule saved.", "success")
                return redirect(url_for("ScheduleView.show", pk=made.id))
        return self.render_template("triggers/schedule_form.html", workflows=choices,
                                    form=form, errors=errors, zones=ZONES)

    @expose("/<pk>")
    @has_access
    @permission_name("read")
    def show(self, pk: str) -> str:
        actor = request_actor()
        schedule = _call("schedule", "read", pk,
                         lambda a: schedules.get_schedule(db.session, a, pk))
        item = schedules.schedule_dict(db.session, schedule)
        tz = cron.zone(schedule.timezone)
        upcoming = [(t, dt.datetime.fromisoformat(t).astimezone(dt.UTC).isoformat())
                    for t in item["next_fire_times"]]
        _, ticks = schedules.ticks(db.session, actor, pk, 50)
        runs = db.session.execute(select(Backfill).where(Backfill.schedule_id == pk)
                                  .order_by(Backfill.created_at.desc()).limit(10)).scalars()
        return self.render_template(
            "triggers/schedule.html", item=item, tz=tz.key, upcoming=upcoming,
            ticks=[schedules.tick_dict(t) for t in ticks],
            backfills=[backfills.backfill_dict(db.session, b) for b in runs],
            workflow=_names({schedule.workflow_id}).get(schedule.workflow_id),
            may_control=rules.may(actor, schedule.team_id, rules.CONTROL))

    def _set(self, pk: str, paused: bool) -> Response:
        try:
            _call("schedule", "pause" if paused else "resume", pk,
                  lambda a: schedules.set_paused(db.session, a, pk, paused))
            flash("Paused: no tick is decided until you resume." if paused else
                  "Resumed: it fires from the next tick on.", "success")
        except ServiceError as exc:
            flash(str(exc), "danger")
        return redirect(request.form.get("next") or url_for("ScheduleView.show", pk=pk))

    @expose("/<pk>/pause", methods=["POST"])
    @has_access
    @permission_name("control")
    def pause(self, pk: str) -> Response:
        return self._set(pk, True)

    @expose("/<pk>/resume", methods=["POST"])
    @has_access
    @permission_name("control")
    def resume(self, pk: str) -> Response:
        return self._set(pk, False)


class WebhookView(BaseView):
    route_base = "/triggers/webhooks"
    default_view = "list"
    class_permission_name = "Webhooks"
    method_permission_name = {"list": "read", "show": "read", "add": "write",
                              "rotate": "write"}

    @expose("/")
    @has_access
    @permission_name("read")
    def list(self) -> str:
        actor = request_actor()
        rows = webhooks.list_webhooks(db.session, actor)
        names = _names({w.workflow_id for w in rows})
        items = [{**webhooks.webhook_dict(w), "workflow": names.get(w.workflow_id)}
                 for w in rows]
        return self.render_template("triggers/webhooks.html", items=items,
                                    may_add=bool(_workflows(actor)))

    def _created(self, hook: Any, token: str, what: str) -> str:
        item = webhooks.webhook_dict(hook, token)
        return self.render_template("triggers/webhook_created.html", item=item, what=what,
                                    base=request.host_url.rstrip("/"))

    @expose("/new", methods=["GET", "POST"])
    @has_access
    @permission_name("write")
    def add(self) -> str | Response:
        choices, form = _choices(), request.form
        errors: list[dict[str, str]] = []
        if request.method == "POST":
            made, errors = _submit("webhook", lambda params: {
                "workflow_id": form.get("workflow_id", ""), "name": form.get("name", ""),
                "signature": {"scheme": form.get("scheme") or "none",
                              "secret": form.get("secret") or None,
                              "tolerance": form.get("tolerance") or "5m"},
                "params": params, "filter": form.get("filter") or None}, webhooks.WebhookIn,
                lambda a, data: webhooks.create_webhook(db.session, a, data))
            if made is not None:
                return self._created(*made, "created")
        return self.render_template("triggers/webhook_form.html", workflows=choices,
                                    form=form, errors=errors)

    @expose("/<pk>")
    @has_access
    @permission_name("read")
    def show(self, pk: str) -> str:
        actor = request_actor()
        hook = _call("webhook", "read", pk, lambda a: webhooks.get_webhook(db.session, a, pk))
        _, rows = webhooks.deliveries(db.session, actor, pk, 50)
        return self.render_template(
            "triggers/webhook.html", item=webhooks.webhook_dict(hook),
            workflow=_names({hook.workflow_id}).get(hook.workflow_id),
            deliveries=[webhooks.delivery_dict(r) for r in rows],
            may_write=rules.may(actor, hook.team_id, rules.EDIT))

    @expose("/<pk>/rotate", methods=["POST"])
    @has_access
    @permission_name("write")
    def rotate(self, pk: str) -> str | Response:
        try:
            hook, token = _call("webhook", "rotate-token", pk,
                                lambda a: webhooks.rotate_token(db.session, a, pk))
        except ServiceError as exc:
            flash(str(exc), "danger")
            return redirect(url_for("WebhookView.show", pk=pk))
        return self._created(hook, token, "given a new URL")


class EventTriggerView(BaseView):
    route_base = "/triggers/events"
    default_view = "list"
    class_permission_name = "EventTriggers"
    method_permission_name = {"list": "read", "add": "write"}

    @expose("/")
    @has_access
    @permission_name("read")
    def list(self) -> str:
        actor = request_actor()
        rows = events.list_triggers(db.session, actor)
        names = _names({t.workflow_id for t in rows} | {t.on_workflow_id for t in rows
                                                        if t.on_workflow_id})
        items = [{**events.trigger_dict(t), "workflow": names.get(t.workflow_id),
                  "upstream": names.get(t.on_workflow_id or "")} for t in rows]
        return self.render_template("triggers/events.html", items=items,
                                    may_add=bool(_workflows(actor)))

    @expose("/new", methods=["GET", "POST"])
    @has_access
    @permission_name("write")
    def add(self) -> str | Response:
        choices, form = _choices(), request.form
        errors: list[dict[str, str]] = []
        if request.method == "POST":
            on: dict[str, Any] = (
                {"event": form.get("event", "")} if form.get("kind") == "event" else
                {"workflow_id": form.get("on_workflow_id", ""),
                 "statuses": form.getlist("statuses") or ["succeeded"]})
            made, errors = _submit("event_trigger", lambda params: {
                "workflow_id": form.get("workflow_id", ""), "on": on, "params": params},
                events.EventTriggerIn,
                lambda a, data: events.create_trigger(db.session, a, data))
            if made is not None:
                flash("Event trigger saved.", "success")
                return redirect(url_for("EventTriggerView.list"))
        return self.render_template("triggers/event_form.html", workflows=choices,
                                    form=form, errors=errors, statuses=events.FINISHED)


def install_template_helpers(app: Any) -> None:
    """``workflow_triggers(ids)`` for the workflows list, ``triggers_of(id)`` for a
    workflow's page (``reg.on_ready``): the pages of the workflows package show triggers
    without importing this one."""
    app.jinja_env.globals["workflow_triggers"] = lambda ids: schedules.overview(
        db.session, list(ids))
    app.jinja_env.globals["triggers_of"] = lambda workflow_id: schedules.of_workflow(
        db.session, workflow_id)
