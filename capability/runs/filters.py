"""FAB filters of the runs list (page and API)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_appbuilder.models.filters import BaseFilter

from app.extensions import db
from app.models import Team
from capability.models import Run


class RunArgsFilter(BaseFilter):
    """The plain query arguments of API.md and TRIGGERS.md: workflow, status, team,
    trigger, trigger_source_id."""

    name = "Run query arguments"
    arg_name = None

    def apply(self, query: Any, value: Any) -> Any:
        args = request.args
        if args.get("workflow"):
            query = query.filter(Run.workflow_id == args["workflow"])
        if args.get("status"):
            query = query.filter(Run.status == args["status"])
        if args.get("trigger"):
            query = query.filter(Run.trigger == args["trigger"])
        if args.get("trigger_source_id"):
            query = query.filter(Run.trigger_source_id == args["trigger_source_id"])
        if args.get("team"):
            query = query.filter(Run.team_id.in_(
                db.session.query(Team.id).filter(Team.name == args["team"])
            ))
        return query
