"""The home page: who you are, your teams, where to go next."""

from __future__ import annotations

from flask import current_app
from flask_appbuilder import IndexView, expose

from app.composition.engine import get_composition
from app.extensions import db
from app.models import Team
from app.security.request import request_actor


class HomeView(IndexView):
    index_template = "index.html"

    @expose("/")
    def index(self) -> str:
        actor = request_actor()
        teams = []
        if actor.user_id is not None:
            teams = [
                db.session.get(Team, team_id) for team_id in sorted(actor.team_ids)
            ]
        capabilities = [item.as_dict() for item in get_composition(current_app).loaded]
        return self.render_template(
            self.index_template,
            actor=actor,
            teams=[t for t in teams if t is not None],
            capabilities=capabilities,
        )
