"""Security -> Secrets: a team's workflow secrets. Authors of a team add, replace and
delete its secrets; its Operators and Viewers see the list of names; the row scope
(``ScopedMixin``) hides other teams' secrets.

FAB's list, add, edit and delete pages; every change goes through ``secrets.service``
(the functions ``/api/v1/secrets/`` calls) with the request's actor. A value is typed
into a password input and never rendered back, not even masked: the edit form only
sets a new one. Refused changes are flashed and audited like refused API calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, flash, request
from flask_appbuilder import ModelView
from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
from flask_appbuilder.models.sqla.interface import SQLAInterface
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from app.api_support import AuditedFormsMixin, call_for_page
from app.errors import ServiceError, parse
from app.extensions import db
from app.security.actor import Actor
from app.security.scope import ScopedMixin
from app.times import when
from capability.models import Secret
from capability.secrets import service as secrets

T = TypeVar("T")


def _value_field() -> PasswordField:
    return PasswordField(
        "Value", widget=BS3PasswordFieldWidget(),
        validators=[DataRequired(), Length(max=secrets.MAX_VALUE)],
        description="Encrypted when saved, and never shown again.",
    )


def _call(action: str, target: str | None, fn: Callable[[Actor], T]) -> T:
    """``fn(actor)``: a refused change is audited; NotFound -> 404, Forbidden -> 403, any
    other ``ServiceError`` raised again for the page to flash."""
    return call_for_page(action, "secret", target, fn, missing="deleted, or never saved.",
                         forbidden=True)


def _saved(action: str, target: str | None, fn: Callable[[Actor], Any], done: str) -> bool:
    """Run a change: flash ``done`` when it is made, the service's refusal when not."""
    try:
        _call(action, target, fn)
    except ServiceError as exc:
        flash(str(exc), "danger")
        return False
    flash(done, "success")
    return True


def _label(secret: Secret) -> str:
    return f"{secret.team!r}: {secret.name}"


class SecretView(AuditedFormsMixin, ScopedMixin, ModelView):
    """The list and forms; the forms' fields are ours, the writes the service's."""

    audit_target_type = "secret"
    route_base = "/secrets"
    datamodel = SQLAInterface(Secret)
    class_permission_name = "Secrets"
    method_permission_name = {"list": "read", "add": "write", "edit": "write",
                              "delete": "write"}
    include_route_methods = set(method_permission_name)
    list_title = "Secrets"
    add_title = "Add a secret"
    edit_title = "Set a new value"
    list_template = "secrets/list.html"
    add_template = "secrets/add.html"
    edit_template = "secrets/edit.html"
    list_columns = ["team", "name", "updated_by", "updated_at"]
    label_columns = {"updated_by": "Updated by", "updated_at": "Updated"}
    order_columns = ["name", "updated_by", "updated_at"]
    search_columns = ["team", "name", "updated_by"]
    formatters_columns = {"updated_at": when}
    base_order = ("name", "asc")
    add_columns = ["team", "name", "value"]
    order_rel_fields = {"team": ("name", "asc")}
    add_form_extra_fields = {"value": _value_field()}
    description_columns = {
        "name": "How workflows of the team read it: {{ secrets.<name> }}. Lower-case "
                "letters, digits and _, starting with a letter.",
    }
    edit_columns = ["secret", "value"]
    edit_form_extra_fields = {
        "secret": StringField("Secret", widget=BS3TextFieldWidget(),
                              render_kw={"readonly": True}),
        "value": _value_field(),
    }

    def _form(self, form: Any, save: Callable[[], bool], widget: Callable[..., Any]) -> Any:
        """FAB's form flow: a valid POST that the service takes -> None (FAB redirects);
        otherwise the form again, with its errors (and the refusal flashed)."""
        if request.method == "POST":
            if form.validate() and save():
                return None
        else:
            self.update_redirect()
        return widget(form=form)

    def _add(self) -> Any:
        form = self.add_form.refresh()

        def save() -> bool:
            team = repr(form.team.data) if form.team.data else ""
            body = {"team": team, "name": form.name.data or "", "value": form.value.data or ""}
            return _saved("create", None, lambda actor: secrets.create_secret(
                db.session, actor, current_app.config, parse(secrets.SecretIn, body)),
                f"Secret {team}: {body['name']} saved.")

        return self._form(form, save, self._get_add_widget)

    def _edit(self, pk: Any) -> Any:
        secret = _call("update", pk, lambda actor: secrets.get_secret(db.session, actor, pk))
        form = self.edit_form.refresh()
        form.secret.data = _label(secret)

        def save() -> bool:
            body = {"value": form.value.data or ""}
            return _saved("update", pk, lambda actor: secrets.update_secret(
                db.session, actor, current_app.config, pk, parse(secrets.SecretValueIn, body)),
                f"New value saved for {_label(secret)}.")

        return self._form(form, save, self._get_edit_widget)

    def _delete(self, pk: Any) -> None:
        secret = _call("delete", pk, lambda actor: secrets.get_secret(db.session, actor, pk))
        _saved("delete", pk, lambda actor: secrets.delete_secret(db.session, actor, pk),
               f"Secret {_label(secret)} deleted.")
