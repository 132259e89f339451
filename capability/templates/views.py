"""Workflows -> Templates: the gallery (search, category filter, cards), a template's
page (its graph, its definition, the "Use template" form), and that form's POST,
which lands on the new workflow's page.

Thin over ``templates.service``; the form's refusal (another team, a name taken, a
role that may not author) is shown on the template's page and audited like a refused
API call (``call_for_page``).
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.views import expose

from app.api_support import call_for_page
from app.errors import ServiceError
from app.extensions import db
from app.security.actor import Actor
from app.security.request import request_actor
from app.security.roles import AUTHOR
from app.tenancy.service import list_teams
from capability import dsl
from capability.runs import graph as run_graph
from capability.templates import service as templates


class TemplateView(BaseView):
    route_base = "/templates"
    default_view = "gallery"
    class_permission_name = "Templates"
    method_permission_name = {"gallery": "read", "page": "read", "use": "read"}

    def _teams(self, actor: Actor) -> list[Any]:
        """Teams the actor may create workflows in (the form is shown only then)."""
        if not self.appbuilder.sm.has_access("can_write", "Workflows"):
            return []
        return [t for t in list_teams(db.session, actor)
                if actor.is_admin or (AUTHOR in actor.roles and t.id in actor.team_ids)]

    @expose("/")
    @has_access
    @permission_name("read")
    def gallery(self) -> str:
        actor = request_actor()
        category = request.args.get("category") or None
        search = (request.args.get("search") or "").strip()
        found = templates.list_templates(actor, category, search or None)
        return self.render_template(
            "templates/gallery.html", templates=found, categories=templates.categories(),
            category=category, search=search,
            total=len(templates.list_templates(actor)))

    def _page(self, slug: str, status: int = 200, **context: Any) -> tuple[str, int]:
        actor = request_actor()
        template = call_for_page("read", "template", slug,
                                 lambda a: templates.get_template(a, slug),
                                 missing="no such template.")
        result = dsl.validate_definition(template["definition"])
        graph = run_graph.graph_data(result.definition) if result.definition else None
        context.setdefault("team", "")
        context.setdefault("name", template["definition"]["name"])
        context.setdefault("message", "")
        context.setdefault("errors", [])
        page = self.render_template("templates/page.html", template=template, graph=graph,
                                    teams=self._teams(actor), **context)
        return page, status

    @expose("/<slug>")
    @has_access
    @permission_name("read")
    def page(self, slug: str) -> Any:
        return self._page(slug)

    @expose("/<slug>/use", methods=["POST"])
    @has_access
    @permission_name("read")
    def use(self, slug: str) -> Any:
        team = request.form.get("team", "")
        name = request.form.get("name", "").strip() or None
        try:
            made = call_for_page("use", "template", slug, lambda a: templates.use_template(
                db.session, a, slug, team, name), missing="no such template.",
                forbidden=False)
        except ServiceError as exc:
            return self._page(slug, exc.status, team=team, name=name or "",
                              message=exc.message, errors=exc.errors)
        flash(f"Workflow {made['name']} created from the template {slug}: version 1.",
              "success")
        return redirect(url_for("WorkflowView.page", pk=made["id"]))
