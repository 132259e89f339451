"""``/api/v1/workflows/`` (API.md, "Workflows"): definitions and their versions, and
the start of a run.

Thin over ``capability.service`` (and ``runs.service`` for a start): every body is
parsed by its pydantic model (``WorkflowIn``, ``DefinitionIn``, ``RollbackIn``,
``StartRunIn``), the service is called with the request's actor, and its errors are
mapped to status codes (``app.api_support.call_service``).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface

from app.api_support import UuidModelApi, call_service, json_body
from app.errors import ValidationFailed, parse
from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.security.actor import Actor
from app.security.scope import ScopedMixin
from capability import dsl, service
from capability.engine.dispatch import dispatcher_for
from capability.filters import LiveOnly
from capability.models import Workflow
from capability.runs import service as runs
from capability.steps import service as steps

PERMISSIONS = {
    "get_list": "read", "get": "read", "info": "read", "versions": "read", "schema": "read",
    "validate": "read", "post": "write", "put": "write", "delete": "write", "rollback": "write",
    "start_run": "run", "test_step": "write",
}


def _optional_body() -> Any:
    """A body that may be left out (``POST .../runs``): ``{}`` when there is none."""
    return json_body() if request.get_data(cache=True) else {}


class WorkflowApi(ScopedMixin, UuidModelApi):
    resource_name = "workflows"
    datamodel = SQLAInterface(Workflow)
    class_permission_name = "Workflows"
    method_permission_name = PERMISSIONS
    allow_browser_login = True
    include_route_methods = set(PERMISSIONS)
    list_columns = ["id", "name", "description", "team.name", "current_version", "created_by",
                    "created_at", "updated_at"]
    order_columns = ["name", "created_at", "updated_at"]
    search_columns = ["name", "description", "team"]
    base_order = ("name", "asc")
    base_filters = [["id", LiveOnly, lambda: None]]

    renamed_list_fields = {"current_version": "version"}

    def pre_get_list(self, data: dict[str, Any]) -> None:
        for item in data.get("result", []):
            item["team"] = (item.get("team") or {}).get("name")
            item["version"] = item.pop("current_version", None)

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str, **_: Any) -> Response:  # type: ignore[override]
        """A workflow with its current definition and version.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the workflow}
            404: {description: "not found, deleted, or not in your teams"}
        """

        def run(actor: Actor) -> Response:
            version = service.get_version(db.session, actor, pk)
            result = service.workflow_dict(version.workflow, version)
            result["cost"] = service.workflow_cost(db.session, pk)
            return self.response(200, id=pk, result=result)

        return call_service("read", "workflow", pk, run)

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a workflow in a team: version 1.
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    team: {type: string}
                    definition: {description: "the definition: an object, or YAML/JSON text"}
                    format: {type: string, enum: [yaml, json]}
          responses:
            201: {description: created}
            409: {description: a workflow of that name exists in the team}
            422: {description: "invalid definition: every error with its path"}
        """

        def run(actor: Actor) -> Response:
            body = parse(service.WorkflowIn, json_body())
            source = service.read_source(body.definition, body.format)
            workflow = service.create_workflow(db.session, actor, body.team, source)
            version = service.get_version(db.session, actor, workflow.id)
            result = service.workflow_dict(workflow, version)
            return self.response(201, id=workflow.id, result=result)

        return call_service("create", "workflow", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Save a new immutable version (runs keep the version they started with).
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    definition: {description: "an object, or YAML/JSON text"}
                    format: {type: string, enum: [yaml, json]}
          responses:
            200: {description: the new version}
            404: {description: not found}
            422: {description: invalid definition}
        """

        def run(actor: Actor) -> Response:
            body = parse(service.DefinitionIn, json_body())
            source = service.read_source(body.definition, body.format)
            workflow = service.update_workflow(db.session, actor, pk, source)
            version = service.get_version(db.session, actor, workflow.id)
            return self.response(200, id=pk, result=service.workflow_dict(workflow, version))

        return call_service("update", "workflow", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete a workflow (soft: its versions and runs are kept).
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            service.delete_workflow(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "workflow", pk, run)

    @expose("/<pk>/versions", methods=["GET"])
    @protect()
    @safe
    def versions(self, pk: str) -> Response:
        """Every version, newest first.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: versions}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            rows = service.list_versions(db.session, actor, pk)
            return self.response(200, count=len(rows),
                                 result=[service.version_dict(v) for v in rows])

        return call_service("read", "workflow", pk, run)

    @expose("/<pk>/rollback", methods=["POST"])
    @protect()
    @safe
    def rollback(self, pk: str) -> Response:
        """Make a new version equal to version n.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {version: {type: integer}}}
          responses:
            200: {description: the new version}
            404: {description: not found}
            422: {description: no such version}
        """

        def run(actor: Actor) -> Response:
            body = parse(service.RollbackIn, json_body())
            workflow = service.rollback(db.session, actor, pk, body)
            version = service.get_version(db.session, actor, workflow.id)
            return self.response(200, id=pk, result=service.workflow_dict(workflow, version))

        return call_service("rollback", "workflow", pk, run)

    @expose("/<pk>/runs", methods=["POST"])
    @protect()
    @safe
    def start_run(self, pk: str) -> Response:
        """Start a run of the current version.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    params: {type: object}
                    idempotency_key: {type: string}
          responses:
            201: {description: "the run's summary (task_counts, no tasks), status queued"}
            200: {description: "the run created earlier with the same idempotency key"}
            404: {description: not found}
            422: {description: "params that break their declarations: every error"}
            429: {description: "over a team quota (TEAM_MAX_ACTIVE_RUNS, TEAM_RUN_RATE); the
              Retry-After header says when to try again"}
        """

        def run(actor: Actor) -> Response:
            body = parse(runs.StartRunIn, _optional_body())
            started, created = runs.start_run(
                db.session, actor, dispatcher_for(current_app), pk, body, trigger="api")
            # The run's summary (its task counts, not its tasks): a start answers in the
            # same time whatever the size of the run (GET /api/v1/runs/<id> has the rest).
            return self.response(201 if created else 200, id=started.id,
                                 result=runs.run_dict(db.session, started, actor,
                                                      with_tasks=False))

        return call_service("start", "run", pk, run)

    @expose("/<pk>/tasks/<task_id>/test", methods=["POST"])
    @protect()
    @safe
    def test_step(self, pk: str, task_id: str) -> Response:
        """Run one task of the workflow's current version on a worker, with the given
        params and upstream outputs, without making a run (Author); audited.
        ---
        post:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: task_id, schema: {type: string}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    params: {type: object}
                    upstream: {type: object, description: "{task_id: {output: ...}}"}
                    item: {description: "a for_each task's element (default the first)"}
          responses:
            200: {description: "{status, output, error, logs, took_ms}"}
            403: {description: not an Author of the workflow's team}
            404: {description: "no such workflow or task, or not in your teams"}
            422: {description: "params or upstream not valid, or a type that needs a run"}
            504: {description: no worker answered in time}
        """

        def run(actor: Actor) -> Response:
            body = parse(steps.StepTestIn, json_body())
            result = steps.test_step(db.session, actor, get_redis(current_app), pk, task_id,
                                     body)
            return self.response(200, id=pk, result=result)

        return call_service("test_step", "workflow", pk, run)

    @expose("/validate", methods=["POST"])
    @protect()
    @safe
    def validate(self) -> Response:
        """Check a definition without saving it: every error at once, with its path.
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    definition: {description: "an object, or YAML/JSON text"}
                    format: {type: string, enum: [yaml, json]}
          responses:
            200:
              description: the verdict
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      valid: {type: boolean}
                      errors: {type: array, items: {type: object}}
        """

        def run(actor: Actor) -> Response:
            body = parse(service.DefinitionIn, json_body())
            try:
                source = service.read_source(body.definition, body.format)
                service.check_definition(source)
            except ValidationFailed as exc:
                return self.response(200, valid=False, errors=exc.errors)
            return self.response(200, valid=True, errors=[])

        return call_service("validate", "workflow", None, run)

    @expose("/schema", methods=["GET"])
    @protect()
    @safe
    def schema(self) -> Response:
        """The JSON Schema of workflow definitions (DSL v1).
        ---
        get:
          responses:
            200: {description: a JSON Schema document}
        """
        return self.response(200, **dsl.definition_json_schema())

