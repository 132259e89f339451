"""Shared plumbing for our REST handlers: parse, call the service, map its errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Response,
    abort,
    current_app,
    jsonify,
    make_response,
    redirect,
    request,
    session,
    url_for,
)
from flask_appbuilder.api import ModelRestApi, expose, merge_response_func, protect, rison, safe
from flask_appbuilder.api.schemas import get_item_schema
from flask_appbuilder.const import (
    API_DESCRIPTION_COLUMNS_RIS_KEY,
    API_LABEL_COLUMNS_RIS_KEY,
    API_SHOW_COLUMNS_RIS_KEY,
    API_SHOW_TITLE_RIS_KEY,
)
from flask_appbuilder.security.decorators import permission_name
from sqlalchemy.exc import DataError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from app.audit.recorder import build_event, record
from app.audit.web import mark_audited
from app.errors import DATA_ERROR_MESSAGE, Forbidden, NotFound, PayloadTooLarge, ServiceError
from app.extensions import db
from app.openapi_docs import fix_operation, model_columns_as_sent, relations_by_name
from app.security.actor import Actor
from app.security.request import request_actor

T = TypeVar("T")


def json_error(status: int, message: str, errors: list[dict[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"message": message}
    if errors:
        body["errors"] = errors
    return make_response(jsonify(body), status)


def json_body() -> Any:
    """The request's JSON body; a ``ServiceError`` (400) when it is missing or malformed."""
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge as exc:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes") from exc
    if not raw:
        raise ServiceError("Request body is missing: send a JSON object")
    payload = request.get_json(silent=True)
    if payload is None:
        raise ServiceError("Request body is not valid JSON (Content-Type: application/json)")
    return payload


def audit_failure(
    actor: Actor, exc: Exception, action: str, target_type: str, target_id: str | None
) -> None:
    outcome = "denied" if isinstance(exc, Forbidden) else "error"
    message = exc.message if isinstance(exc, ServiceError) else str(exc)
    db.session.rollback()
    record(
        db.session,
        build_event(
            actor, action, target_type, target_id, outcome=outcome,
            after={"message": message, "errors": getattr(exc, "errors", [])},
        ),
    )
    db.session.commit()
    mark_audited()


@contextmanager
def audit_rejection(action: str, target_type: str, target_id: str | None) -> Iterator[None]:
    """For form views: a check that raises is recorded as a rejected attempt, then re-raised
    (FAB shows its message to the user)."""
    try:
        yield
    except Exception as exc:
        audit_failure(request_actor(), exc, action, target_type, target_id)
        raise


def call_service(
    action: str,
    target_type: str,
    target_id: str | None,
    fn: Callable[[Actor], Response],
) -> Response:
    """Run ``fn(actor)``; on a service error answer with JSON and audit the attempt."""
    actor = request_actor()
    # Refused changes are kept; a failed read changed nothing and is not an act to audit
    # (a 403 on a read is still recorded by the request hook).
    audited = request.method in {"POST", "PUT", "PATCH", "DELETE"}
    try:
        return fn(actor)
    except NotFound as exc:
        if audited:
            audit_failure(actor, exc, action, target_type, target_id)
        return json_error(404, "Not found")
    except ServiceError as exc:
        if audited:
            audit_failure(actor, exc, action, target_type, target_id)
        response = json_error(exc.status, exc.message, exc.errors)
        response.headers.update(exc.headers())  # e.g. a 429's Retry-After
        return response


def call_for_page(
    action: str,
    target_type: str,
    target_id: str | None,
    fn: Callable[[Actor], T],
    *,
    missing: str,
    forbidden: bool = False,
) -> T:
    """For server-rendered pages: ``fn(actor)``. A refused POST is audited like a refused
    API call; ``NotFound`` answers 404 (``missing`` says why, e.g. "not in your teams."),
    ``Forbidden`` 403 when ``forbidden``; any other ``ServiceError`` is raised again for
    the page to show."""
    actor = request_actor()
    try:
        return fn(actor)
    except ServiceError as exc:
        if request.method == "POST":
            audit_failure(actor, exc, action, target_type, target_id)
        if isinstance(exc, NotFound):
            abort(404, f"{str(exc).capitalize()}: {missing}")
        if forbidden and isinstance(exc, Forbidden):
            abort(403)
        raise


class QueryExamplesMixin:
    """Publish an example of the ``q`` argument that the endpoint accepts.

    FAB documents ``q`` of its list, info and item endpoints with nothing but a
    reference to its generic JSON Schema (``get_list_schema`` ...), so Swagger UI makes
    its own example from that schema: ``columns`` and ``sel_columns`` both filled
    (``Cannot use both select and sel columns``), a ``filters`` entry on the column
    ``"string"``, ``page_size: 0``. "Try it out" then fails with its pre-filled value.
    An example placed on the parameter wins over the schema's, and this one is built
    from the API's own order columns, so it works as it is.

    Also FAB's generic response schemas, corrected to what is sent (app.openapi_docs).
    """

    datamodel: Any
    order_columns: list[str]
    base_order: Any
    page_size: int

    def add_apispec_components(self, api_spec: Any) -> None:
        super().add_apispec_components(api_spec)  # type: ignore[misc]
        schemas = api_spec.components.schemas
        for name in (getattr(self, "list_model_schema_name", None),
                     getattr(self, "show_model_schema_name", None)):
            model_columns_as_sent(schemas.get(name), getattr(self, "datamodel", None))

    def q_example(self, method: str) -> dict[str, Any] | None:
        if method == "get_list":
            example: dict[str, Any] = {"page": 0, "page_size": min(self.page_size, 25)}
            if self.base_order and self.base_order[0] in self.order_columns:
                example["order_column"], example["order_direction"] = self.base_order
            elif self.order_columns:
                example["order_column"] = self.order_columns[0]
                example["order_direction"] = "asc"
            return example
        if method == "info":
            return {"keys": ["permissions"]}
        if method == "get":
            return {"keys": ["show_columns"]}
        return None

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None,
        methods: list[str] | None = None, func: Callable[..., Response] | None = None,
        **kwargs: Any,
    ) -> None:
        super().operation_helper(  # type: ignore[misc]
            path=path, operations=operations, methods=methods, func=func, **kwargs)
        if func is None:
            return
        for operation in (operations or {}).values():
            fix_operation(getattr(self, "datamodel", None), func.__name__, operation)
        example = self.q_example(func.__name__)
        if example is None or not operations:
            return
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param.get("in") == "query" and param.get("name") == "q":
                    media = param.setdefault("content", {}).setdefault("application/json", {})
                    media["example"] = example


class UuidModelApi(QueryExamplesMixin, ModelRestApi):
    """FAB's ModelRestApi reads one row at ``/<int:pk>``; our ids are UUIDv7 strings."""

    def response_500(self, message: str | None = None) -> Response:
        # FAB's @safe answers every exception with this; one the database raised for a
        # value it refused is the client's input (the app's DataError handler, for APIs).
        if isinstance(sys.exc_info()[1], DataError):
            db.session.rollback()
            return self.response(422, message=DATA_ERROR_MESSAGE)
        return super().response_500(message)  # type: ignore[no-any-return]

    # Fields of a list row sent under another name than the model's (pre_get_list).
    renamed_list_fields: dict[str, str] = {}
    # Fields an item (get) has beyond its show columns (pre_get), as JSON Schemas.
    extra_show_fields: dict[str, Any] = {}

    def add_apispec_components(self, api_spec: Any) -> None:
        super().add_apispec_components(api_spec)
        schemas = api_spec.components.schemas
        relations_by_name(schemas.get(self.list_model_schema_name), self.renamed_list_fields)
        show = schemas.get(self.show_model_schema_name)
        relations_by_name(show)
        if show is not None:
            show.setdefault("properties", {}).update(self.extra_show_fields)

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    @permission_name("get")
    @rison(get_item_schema)
    @merge_response_func(ModelRestApi.merge_show_label_columns, API_LABEL_COLUMNS_RIS_KEY)
    @merge_response_func(ModelRestApi.merge_show_columns, API_SHOW_COLUMNS_RIS_KEY)
    @merge_response_func(ModelRestApi.merge_description_columns, API_DESCRIPTION_COLUMNS_RIS_KEY)
    @merge_response_func(ModelRestApi.merge_show_title, API_SHOW_TITLE_RIS_KEY)
    def get(self, pk: str, **kwargs: Any) -> Response:
        """Get one item by id
        ---
        get:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          responses:
            200:
              description: the item
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: string}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            404: {description: "not found, or not in your scope"}
        """
        return self.get_headless(pk, **kwargs)


class AuditedFormsMixin:
    """For FAB ModelViews: a form the view refuses (field validation, FAB's own unique
    check) is recorded as a rejected attempt, like a refused API call."""

    audit_target_type = ""

    def _audit_form(self, action: str, form: Any) -> None:
        if request.method == "POST" and form is not None and form.errors:
            errors = [
                {"path": field, "message": "; ".join(str(m) for m in messages)}
                for field, messages in form.errors.items()
            ]
            exc = ServiceError("Form rejected", errors)
            target = (request.view_args or {}).get("pk")
            audit_failure(request_actor(), exc, action, self.audit_target_type, target)

    def _get_add_widget(self, form: Any, exclude_cols: Any = None, widgets: Any = None) -> Any:
        self._audit_form("create", form)
        return super()._get_add_widget(  # type: ignore[misc]
            form, exclude_cols=exclude_cols, widgets=widgets
        )

    def _get_edit_widget(self, form: Any, exclude_cols: Any = None, widgets: Any = None) -> Any:
        self._audit_form("update", form)
        return super()._get_edit_widget(  # type: ignore[misc]
            form, exclude_cols=exclude_cols, widgets=widgets
        )


ORIGINS_KEY = "apg_form_origins"
MAX_ORIGINS = 8


def local_url(url: str | None) -> str | None:
    """``url`` as a path on this site (``/teamview/list/?page=2``), or None when it
    points elsewhere or is missing."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.netloc and parts.netloc != request.host:
        return None
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


class BackToOriginMixin:
    """For FAB ModelViews: after an add, edit or delete, go back to the page the form
    or the delete button was on (a list, a tenant's or a team's page), else to this
    view's list.

    FAB pops the newest page off a history kept in the session cookie and returns to
    the one below it, assuming the form's own page is on top. It is not when the form
    was not requested again: posted a second time after the Back button brought it
    back from the browser's cache, or when another tab pushed a page meanwhile. Saving a
    team then landed on the tenants list (the page below the teams list). The page a
    form was opened from is known when it opens (its Referer); it is kept per form URL.
    """

    endpoint: str
    datamodel: Any

    def _list_url(self) -> str:
        return url_for(f"{self.endpoint}.list")

    def _remember_origin(self) -> None:
        origin = local_url(request.referrer)
        if request.method != "GET" or origin is None or urlsplit(origin).path == request.path:
            return
        origins = {k: v for k, v in (session.get(ORIGINS_KEY) or {}).items()
                   if k != request.path}
        origins[request.path] = origin
        session[ORIGINS_KEY] = dict(list(origins.items())[-MAX_ORIGINS:])

    def _origin(self) -> str:
        # Kept after use: a form the Back button brings back from the browser's cache
        # is posted again without being requested again.
        origin = (session.get(ORIGINS_KEY) or {}).get(request.path)
        return str(origin) if origin else self._list_url()

    def _add(self) -> Any:
        self._remember_origin()
        return super()._add()  # type: ignore[misc]

    def _edit(self, pk: Any) -> Any:
        self._remember_origin()
        return super()._edit(pk)  # type: ignore[misc]

    def post_add_redirect(self) -> BaseResponse:
        return redirect(self._origin())

    def post_edit_redirect(self) -> BaseResponse:
        return redirect(self._origin())

    def post_delete_redirect(self) -> BaseResponse:
        # The delete button's page, unless it was the page of the row just deleted.
        origin = local_url(request.referrer)
        pk = (request.view_args or {}).get("pk")
        gone = pk is not None and self.datamodel.get(pk) is None
        if origin is None or (gone and str(pk) in urlsplit(origin).path.split("/")):
            return redirect(self._list_url())
        return redirect(origin)
