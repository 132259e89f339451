"""Row scope: a user sees and acts only on rows of their own teams and tenant.

One mechanism for every view, API and service:

* a model says how it is scoped with a ``scope_clause(actor)`` classmethod
  (``TeamScoped`` gives the usual one: ``team_id IN (actor's teams)``);
* services filter their statements with ``scoped(stmt, Model, actor)`` and load single
  rows with ``get_scoped`` (another team's row: ``NotFound``, so its existence is
  not revealed);
* FAB views and APIs mix in ``ScopedMixin``, which installs ``ScopeFilter`` as a base
  filter (list, show, edit, delete, search, export) and on every related-field
  dropdown that points at a scoped model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from flask_appbuilder.models.filters import BaseFilter
from sqlalchemy import String, false, inspect
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from sqlalchemy.sql import ColumnElement, Select

from app.errors import NotFound
from app.extensions import DbSession
from app.security.actor import Actor

T = TypeVar("T")


class TeamScoped:
    """Mixin for rows that belong to one team (workflows, runs, connections...)."""

    @declared_attr
    def team_id(cls) -> Mapped[str]:
        from sqlalchemy import ForeignKey

        return mapped_column(
            String(36), ForeignKey("apg_team.id", ondelete="RESTRICT"), nullable=False, index=True
        )

    @classmethod
    def scope_clause(cls, actor: Actor) -> ColumnElement[bool] | None:
        if actor.is_admin:
            return None
        if not actor.team_ids:
            return false()
        return cls.team_id.in_(sorted(actor.team_ids))  # type: ignore[attr-defined]


def scope_clause(model: type, actor: Actor) -> ColumnElement[bool] | None:
    rule: Callable[[Actor], ColumnElement[bool] | None] | None = getattr(
        model, "scope_clause", None
    )
    if rule is None:
        # A model that does not say how it is scoped is visible to Admin only.
        return None if actor.is_admin else false()
    return rule(actor)


def scoped(stmt: Select[Any], model: type, actor: Actor) -> Select[Any]:
    clause = scope_clause(model, actor)
    return stmt if clause is None else stmt.where(clause)


def get_scoped(session: DbSession, model: type[T], pk: Any, actor: Actor) -> T:
    from sqlalchemy import select

    pk_col = inspect(model).primary_key[0]
    row = session.execute(scoped(select(model).where(pk_col == pk), model, actor)).scalar()
    if row is None:
        raise NotFound(f"{getattr(model, '__name__', 'object')} {pk} not found")
    return row


def is_scoped_model(model: type) -> bool:
    return hasattr(model, "scope_clause")


class ScopeFilter(BaseFilter):
    """FAB filter that applies the model's scope for the request's actor."""

    name = "Row scope"
    arg_name = None

    def apply(self, query: Any, value: Any) -> Any:
        from app.security.request import request_actor

        clause = scope_clause(self.model, request_actor())
        return query if clause is None else query.filter(clause)


def _pk_name(model: type) -> str:
    return inspect(model).primary_key[0].key


class ScopedMixin:
    """Put before ``ModelView``/``ModelRestApi`` in the bases of a view over a scoped model.

    It scopes the view's own rows and every related-field query that lists a scoped
    model, so a dropdown never offers another team's row and a crafted form post
    naming one fails validation.
    """

    datamodel: Any
    base_filters: list[Any]
    _scope_rel_attrs: ClassVar[tuple[str, ...]] = (
        "add_form_query_rel_fields",
        "edit_form_query_rel_fields",
        "search_form_query_rel_fields",
        "add_query_rel_fields",
        "edit_query_rel_fields",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        model = self.datamodel.obj
        own = list(getattr(self, "base_filters", None) or [])
        self.base_filters = [[_pk_name(model), ScopeFilter, lambda: None], *own]
        for rel in inspect(model).relationships:
            target = rel.mapper.class_
            if not is_scoped_model(target):
                continue
            for attr in self._scope_rel_attrs:
                current = dict(getattr(self, attr, None) or {})
                current.setdefault(rel.key, [])
                scope = [_pk_name(target), ScopeFilter, lambda: None]
                current[rel.key] = [scope, *current[rel.key]]
                setattr(self, attr, current)
        super().__init__(*args, **kwargs)
