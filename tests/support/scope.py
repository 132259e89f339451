"""A team-scoped model with a view and an API, registered like a real capability,
to prove the row-scope mechanism on every path (list, show, edit, delete, search,
related dropdowns, API)."""

from __future__ import annotations

from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship

from app.api_support import UuidModelApi
from app.composition import Capability, Registrar
from app.ids import new_id
from app.models import Team
from app.security.roles import AUTHOR, VIEWER
from app.security.scope import ScopedMixin, TeamScoped
from app.tenancy.api import READ_WRITE
from app.tenancy.views import READ_WRITE_VIEW


class NoteBase(DeclarativeBase):
    pass


class Note(TeamScoped, NoteBase):
    __tablename__ = "test_scope_note"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(64))
    # No FK here: this table lives outside the migrated metadata on purpose.
    team_id: Mapped[str] = mapped_column(String(36), index=True)
    team: Mapped[Team] = relationship(
        Team, primaryjoin=lambda: foreign(Note.team_id) == Team.id, lazy="joined"
    )

    def __repr__(self) -> str:
        return self.title


class NoteView(ScopedMixin, ModelView):
    datamodel = SQLAInterface(Note)
    class_permission_name = "Notes"
    method_permission_name = READ_WRITE_VIEW
    list_columns = ["title", "team"]
    add_columns = ["title", "team"]
    edit_columns = ["title", "team"]
    show_columns = ["title", "team"]
    search_columns = ["title", "team"]


class NoteApi(ScopedMixin, UuidModelApi):
    resource_name = "notes"
    datamodel = SQLAInterface(Note)
    class_permission_name = "Notes"
    method_permission_name = READ_WRITE
    allow_browser_login = True
    list_columns = ["id", "title", "team_id"]
    show_columns = ["id", "title", "team_id"]
    search_columns = ["title"]


def register(reg: Registrar) -> None:
    reg.add_view(NoteView, "Notes", category="Notes")
    reg.add_api(NoteApi)


capability = Capability.build(
    register, id="scope_notes", name="Scoped notes (test)", version="1.0.0",
    depends_on=("platform",),
    role_permissions={AUTHOR: (("Notes", "can_read|can_write"),), VIEWER: (("Notes", "can_read"),)},
)
