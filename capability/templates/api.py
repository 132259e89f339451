"""``/api/v1/templates/`` (the library and its use) and the workflow bundles
(``GET /api/v1/workflows/<id>/export``, ``POST /api/v1/workflows/import``).

Thin over ``templates.service`` and ``templates.bundles``. The bundles are a class of
their own on the workflows' base URL and permission ("Workflows": read to export,
write to import), so that ``capability/api.py`` stays as it is.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask_appbuilder.api import BaseApi, expose, protect, safe

from app.api_support import call_service, json_body
from app.errors import parse
from app.extensions import db
from app.security.actor import Actor
from capability.templates import bundles
from capability.templates import service as templates

# "use" is a read of the library: creating the workflow is the workflow service's
# decision (an Author of the team), answered 403 or 422 there.
PERMISSIONS = {"get_list": "read", "get": "read", "use": "read"}


class TemplateApi(BaseApi):
    resource_name = "templates"
    class_permission_name = "Templates"
    method_permission_name = PERMISSIONS
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """The template library, filtered.
        ---
        get:
          parameters:
          - {in: query, name: category, schema: {type: string}}
          - {in: query, name: search, schema: {type: string}}
          responses:
            200: {description: "{count, result: [template summaries], categories}"}
        """

        def run(actor: Actor) -> Response:
            found = templates.list_templates(actor, request.args.get("category") or None,
                                             request.args.get("search") or None)
            return self.response(200, count=len(found), result=found,
                                 categories=templates.categories())

        return call_service("read", "template", None, run)

    @expose("/<slug>", methods=["GET"])
    @protect()
    @safe
    def get(self, slug: str) -> Response:
        """One template with its definition (object and YAML text).
        ---
        get:
          parameters: [{in: path, name: slug, schema: {type: string}}]
          responses:
            200: {description: the template}
            404: {description: no such template}
        """

        def run(actor: Actor) -> Response:
            return self.response(200, id=slug, result=templates.get_template(actor, slug))

        return call_service("read", "template", slug, run)

    @expose("/<slug>/use", methods=["POST"])
    @protect()
    @safe
    def use(self, slug: str) -> Response:
        """Create a workflow in a team from the template (Author of the team).
        ---
        post:
          parameters: [{in: path, name: slug, schema: {type: string}}]
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    team: {type: string}
                    name: {type: string}
                    params_defaults: {type: object}
          responses:
            201: {description: the new workflow}
            403: {description: not an Author of the team}
            404: {description: no such template}
            409: {description: the team has a workflow of that name}
            422: {description: "unknown team, bad name or parameter default: every error"}
        """

        def run(actor: Actor) -> Response:
            body = parse(templates.UseIn, json_body())
            result = templates.use_template(db.session, actor, slug, body.team, body.name,
                                            body.params_defaults)
            return self.response(201, id=result["id"], result=result)

        return call_service("use", "template", slug, run)


class WorkflowBundleApi(BaseApi):
    resource_name = "workflows"
    class_permission_name = "Workflows"
    method_permission_name = {"export": "read", "import_bundle": "write"}
    allow_browser_login = True

    @expose("/<pk>/export", methods=["GET"])
    @protect()
    @safe
    def export(self, pk: str) -> Response:
        """The workflow as a YAML bundle: its current definition, its triggers, the
        connections and secrets it needs (names only), and the SHA-256 of it all.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200:
              description: the bundle
              content:
                application/yaml: {schema: {type: string}}
            404: {description: "not found, deleted, or not in your teams"}
        """

        def run(actor: Actor) -> Response:
            bundle = bundles.export_bundle(db.session, actor, pk)
            name = bundle["workflow"]["name"]
            return Response(bundles.to_yaml(bundle), 200, mimetype="application/yaml",
                            headers={"Content-Disposition":
                                     f'attachment; filename="{name}.bundle.yaml"'})

        return call_service("export", "workflow", pk, run)

    @expose("/import", methods=["POST"])
    @protect()
    @safe
    def import_bundle(self) -> Response:
        """Create a workflow (and its triggers) from a bundle, in a team (Author).
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    team: {type: string}
                    bundle: {description: "the bundle: YAML text, or an object"}
                    on_conflict: {type: string, enum: [new_version, rename, fail]}
          responses:
            201: {description: "{mode, workflow, webhooks (new tokens, shown once),
              missing_connections, missing_secrets, triggers_skipped}"}
            403: {description: not an Author of the team}
            409: {description: "a workflow of that name exists (on_conflict: fail)"}
            422: {description: "changed checksum, unknown fields, invalid definition or
              trigger: every error with its path; nothing created"}
        """

        def run(actor: Actor) -> Response:
            body: Any = parse(bundles.ImportIn, json_body())
            result = bundles.import_bundle(db.session, actor, body)
            return self.response(201, id=result["workflow"]["id"], result=result)

        return call_service("import", "workflow", None, run)
