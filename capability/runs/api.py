"""``/api/v1/runs/`` (API.md, "Runs"): list and read runs of your teams, control them,
answer their approvals and agent steps. Thin over ``runs.service`` and ``runs.agents``."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.hooks import before_request
from flask_appbuilder.models.sqla.interface import SQLAInterface
from pydantic import BaseModel, Field

from app.api_support import UuidModelApi, audit_failure, call_service, json_body, json_error
from app.audit.web import mark_audited
from app.errors import NotFound, ServiceError, parse
from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.security.actor import Actor
from app.security.request import request_actor
from app.security.scope import ScopedMixin
from capability.dsl import RunStatus
from capability.engine.dispatch import dispatcher_for
from capability.models import Run
from capability.runs import agents as agent_steps
from capability.runs import logs as task_logs
from capability.runs import service as runs
from capability.runs.filters import RunArgsFilter

STATUSES = {s.value for s in RunStatus}
# Every value of Run.trigger (TRIGGERS.md): what a start says, and a sub-workflow's.
TRIGGERS = (*runs.TRIGGERS, "workflow")


class OutputIn(BaseModel):
    item: int | None = Field(default=None, ge=0)


class LogsIn(OutputIn):
    attempt: int | None = Field(default=None, ge=1)


def _args(*names: str) -> dict[str, str]:
    return {n: request.args[n] for n in names if n in request.args}


def _page() -> runs.PageIn:
    return parse(runs.PageIn, _args(*runs.PageIn.model_fields))


def _max_value() -> int:
    return int(current_app.config.get("API_VALUE_MAX_CHARS", 65536))


class _RunRows(SQLAInterface):
    """The list's rows without the joins their relationships load by default: a run's
    workflow and team are joined for their names (``list_columns``), not the workflow's
    team or either team's tenant (four more joins; their planning alone took longer
    than the page's read, bench/mcp.py)."""

    def apply_inner_select_joins(self, query: Any, select_columns: Any,
                                 aliases_mapping: Any) -> Any:
        from sqlalchemy.orm import defaultload

        from app.models import Team
        from capability.models import Workflow

        query = super().apply_inner_select_joins(query, select_columns, aliases_mapping)
        if self.obj is not Run:  # FAB makes the related models' interfaces of this class
            return query
        return query.options(defaultload(Run.workflow).lazyload(Workflow.team),
                             defaultload(Run.team).lazyload(Team.tenant))


class RunApi(ScopedMixin, UuidModelApi):
    resource_name = "runs"
    datamodel = _RunRows(Run)
    class_permission_name = "Runs"
    method_permission_name = {
        "get_list": "read", "get": "read", "info": "read", "cancel": "control",
        "pause": "control", "resume": "control", "retry": "control", "approve": "control",
        "reject": "control", "task": "read", "output": "read", "logs": "read",
        "complete": "control", "fail": "control",
    }
    allow_browser_login = True
    include_route_methods = {"get_list", "get", "info", "cancel", "pause", "resume", "retry",
                             "approve", "reject", "task", "output", "logs", "complete", "fail"}
    list_columns = ["id", "workflow_id", "workflow.name", "workflow_version", "team.name",
                    "status", "trigger", "trigger_source_type", "trigger_source_id",
                    "scheduled_for", "params", "created_by", "created_at", "started_at",
                    "finished_at"]
    order_columns = ["created_at", "started_at", "finished_at", "status"]
    base_order = ("created_at", "desc")
    search_columns = ["status", "trigger", "workflow", "team", "created_at",
                      "trigger_source_id"]
    base_filters = [["id", RunArgsFilter, lambda: None]]

    @before_request(only=["get_list"])
    def _check_args(self) -> Response | None:
        status = request.args.get("status")
        if status and status not in STATUSES:
            return json_error(422, "Invalid run filter", [
                {"path": "status", "message": f"one of {', '.join(sorted(STATUSES))}"}])
        trigger = request.args.get("trigger")
        if trigger and trigger not in TRIGGERS:
            return json_error(422, "Invalid run filter", [
                {"path": "trigger", "message": f"one of {', '.join(TRIGGERS)}"}])
        return None

    def pre_get_list(self, data: dict[str, Any]) -> None:
        for item in data.get("result", []):
            item["workflow"] = (item.get("workflow") or {}).get("name")
            item["team"] = (item.get("team") or {}).get("name")

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str, **_: Any) -> Response:  # type: ignore[override]
        """A run with its tasks: status, attempts, output, error; per task a page of its
        for_each elements and attempts (the first 100 unless asked) with their totals.
        ---
        get:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: query, name: items_offset, schema: {type: integer, minimum: 0}}
          - {in: query, name: items_limit, schema: {type: integer, minimum: 0, maximum: 1000}}
          - {in: query, name: attempts_offset, schema: {type: integer, minimum: 0}}
          - {in: query, name: attempts_limit, schema: {type: integer, minimum: 0, maximum: 1000}}
          responses:
            200: {description: the run}
            404: {description: "not found, or not in your teams"}
            422: {description: a bad page}
        """

        def run(actor: Actor) -> Response:
            page = _page()
            found = runs.get_run(db.session, actor, pk)
            return self.response(200, id=pk, result=runs.run_dict(
                db.session, found, actor, page=page, max_value=_max_value()))

        return call_service("read", "run", pk, run)

    @expose("/<pk>/tasks/<task_id>", methods=["GET"])
    @protect()
    @safe
    def task(self, pk: str, task_id: str) -> Response:
        """One task of a run, with a page of its elements and attempts ("load more").
        ---
        get:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          - {in: query, name: items_offset, schema: {type: integer, minimum: 0}}
          - {in: query, name: items_limit, schema: {type: integer, minimum: 0, maximum: 1000}}
          - {in: query, name: attempts_offset, schema: {type: integer, minimum: 0}}
          - {in: query, name: attempts_limit, schema: {type: integer, minimum: 0, maximum: 1000}}
          responses:
            200: {description: the task}
            404: {description: "no such run or task, or not in your teams"}
            422: {description: a bad page}
        """

        def run(actor: Actor) -> Response:
            page = _page()
            found = runs.get_run(db.session, actor, pk)
            return self.response(200, id=pk, result=runs.task_dict(
                db.session, found, task_id, page, max_value=_max_value()))

        return call_service("read", "run", pk, run)

    @expose("/<pk>/tasks/<task_id>/output", methods=["GET"])
    @protect()
    @safe
    def output(self, pk: str, task_id: str) -> Response:
        """A task's whole output (or, with ``item``, one element's), however large: where
        a run's JSON shows an output cut (``output_cut.href``).
        ---
        get:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          - {in: query, name: item, schema: {type: integer, minimum: 0}}
          responses:
            200: {description: "{task_id, item, output}"}
            404: {description: "no such run, task or element, or not in your teams"}
            422: {description: a bad item}
        """

        def run(actor: Actor) -> Response:
            item = parse(OutputIn, _args("item")).item
            found = runs.get_run(db.session, actor, pk)
            output = runs.task_output(db.session, found, task_id, item)
            return self.response(200, id=pk, result={"task_id": task_id, "item": item,
                                                     "output": output})

        return call_service("read", "run", pk, run)

    @expose("/<pk>/tasks/<task_id>/logs", methods=["GET"])
    @protect()
    @safe
    def logs(self, pk: str, task_id: str) -> Response:
        """An attempt's log: the engine's lines and what the task wrote (masked, at most
        ``TASK_LOG_MAX_LINES``; the rest counted in ``truncated``). ``live``: the attempt
        still runs (ask again for more).
        ---
        get:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          - {in: query, name: attempt, schema: {type: integer, minimum: 1},
             description: "the attempt's number; default the latest"}
          - {in: query, name: item, schema: {type: integer, minimum: 0},
             description: "a for_each task's element"}
          responses:
            200: {description: "{lines: [{at, level, message}], truncated, attempt,
              attempts, status, live}"}
            404: {description: "no such run, task, element or attempt, or not in your teams"}
            422: {description: a bad attempt or item}
        """

        def run(actor: Actor) -> Response:
            args = parse(LogsIn, _args("attempt", "item"))
            found = runs.get_run(db.session, actor, pk)
            return self.response(200, id=pk, result=task_logs.task_log(
                db.session, get_redis(current_app), found, task_id, args.attempt, args.item))

        return call_service("read", "run", pk, run)

    def _control(self, pk: str, action: str) -> Response:
        def run(actor: Actor) -> Response:
            done = runs.control(db.session, actor, dispatcher_for(current_app), pk, action)
            return self.response(200, id=pk, result=runs.run_dict(
                db.session, done, actor, max_value=_max_value()))

        return call_service(action, "run", pk, run)

    @expose("/<pk>/cancel", methods=["POST"])
    @protect()
    @safe
    def cancel(self, pk: str) -> Response:
        """Cancel a run: running attempts are stopped through RQ's stop-job command.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the run, cancelled}
            404: {description: not found}
            409: {description: the run is already finished}
        """
        return self._control(pk, "cancel")

    @expose("/<pk>/pause", methods=["POST"])
    @protect()
    @safe
    def pause(self, pk: str) -> Response:
        """Pause a run: attempts on a worker finish, nothing new starts.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the run, paused}
            409: {description: the run is not running}
        """
        return self._control(pk, "pause")

    @expose("/<pk>/resume", methods=["POST"])
    @protect()
    @safe
    def resume(self, pk: str) -> Response:
        """Resume a paused run.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the run, running}
            409: {description: the run is not paused}
        """
        return self._control(pk, "resume")

    @expose("/<pk>/retry", methods=["POST"])
    @protect()
    @safe
    def retry(self, pk: str) -> Response:
        """Run the failed, upstream_failed and cancelled tasks again, each with a fresh
        retry budget.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: "the run, queued again (running once a worker begins)"}
            409: {description: "not allowed now: the run's retry_blocked says why"}
        """
        return self._control(pk, "retry")

    def _answer(self, pk: str, task_id: str, approve: bool) -> Response:
        def run(actor: Actor) -> Response:
            body = parse(runs.AnswerIn, json_body() if request.get_data(cache=True) else {})
            done = runs.answer_approval(db.session, actor, dispatcher_for(current_app), pk,
                                        task_id, approve, body)
            return self.response(200, id=pk, result=runs.run_dict(
                db.session, done, actor, max_value=_max_value()))

        return call_service("approve" if approve else "reject", "run", pk, run)

    @expose("/<pk>/tasks/<task_id>/approve", methods=["POST"])
    @protect()
    @safe
    def approve(self, pk: str, task_id: str) -> Response:
        """Approve an approval task waiting in this run.
        ---
        post:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {comment: {type: string}}}
          responses:
            200: {description: the run}
            409: {description: the task is not waiting for approval}
        """
        return self._answer(pk, task_id, True)

    @expose("/<pk>/tasks/<task_id>/reject", methods=["POST"])
    @protect()
    @safe
    def reject(self, pk: str, task_id: str) -> Response:
        """Reject an approval task: the task fails.
        ---
        post:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {comment: {type: string}}}
          responses:
            200: {description: the run}
            409: {description: the task is not waiting for approval}
        """
        return self._answer(pk, task_id, False)

    def _step(self, pk: str, task_id: str, action: str, model: type[BaseModel],
              answer: Any) -> Response:
        """An agent step's answer. ``runs.agents`` records its own refusals (the MCP
        server calls it too): they are answered here without being recorded again; a
        body refused before the service is recorded here."""
        actor = request_actor()
        try:
            body = parse(model, json_body())
        except ServiceError as exc:
            audit_failure(actor, exc, action, "run", pk)
            return json_error(exc.status, exc.message, exc.errors)
        try:
            result = answer(actor, body)
        except NotFound:
            mark_audited()
            return json_error(404, "Not found")
        except ServiceError as exc:
            mark_audited()
            return json_error(exc.status, exc.message, exc.errors)
        return self.response(200, id=pk, result=result)

    @expose("/<pk>/tasks/<task_id>/complete", methods=["POST"])
    @protect()
    @safe
    def complete(self, pk: str, task_id: str) -> Response:
        """Submit the output of an agent step waiting for it (status waiting_input).
        ---
        post:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          requestBody:
            required: true
            content:
              application/json:
                schema: {type: object, required: [output], properties: {output: {}}}
          responses:
            200: {description: "accepted: {run_id, task_id, status, error, run_status}"}
            404: {description: not found (or another team's run)}
            409: {description: the task is not waiting for input}
            422: {description: "refused: errors lists every violation of the step's
              output_schema and checks ({path, message}); the step keeps waiting"}
        """
        return self._step(pk, task_id, "step_complete", agent_steps.CompleteIn,
                          lambda actor, body: agent_steps.complete_step(
                              db.session, actor, dispatcher_for(current_app), pk, task_id,
                              body.output))

    @expose("/<pk>/tasks/<task_id>/fail", methods=["POST"])
    @protect()
    @safe
    def fail(self, pk: str, task_id: str) -> Response:
        """Fail an agent step waiting for its output: the task fails with the error, not
        retried.
        ---
        post:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          requestBody:
            required: true
            content:
              application/json:
                schema: {type: object, required: [error], properties: {error: {type: string}}}
          responses:
            200: {description: "{run_id, task_id, status: failed, error, run_status}"}
            404: {description: not found (or another team's run)}
            409: {description: the task is not waiting for input}
        """
        return self._step(pk, task_id, "step_fail", agent_steps.FailIn,
                          lambda actor, body: agent_steps.fail_step(
                              db.session, actor, dispatcher_for(current_app), pk, task_id,
                              body.error))
