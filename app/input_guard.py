"""Malformed input refused before any view runs, for every API and page at once.

Each rule here is one the database, a parser or FAB would otherwise turn into a 500:
PostgreSQL rejects a NUL character in text, Python's JSON parser overflows its stack on
deep nesting, a negative page becomes a negative OFFSET, a number compared with a text
column is an SQL error, FAB's list pages call ``int()`` on their paging arguments and
its ``action_post`` looks up an action it never checked. ``refusal()`` answers the first
problem of a request as a ``ServiceError`` (status, message, ``errors`` with the path
and the reason); the app turns it into JSON for ``/api/`` and into the error page for
the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import prison
from flask import current_app, request
from flask_appbuilder.api import BaseApi
from flask_appbuilder.models.filters import map_args_filter
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import PayloadTooLarge, ServiceError, error_path, printable

MAX_JSON_DEPTH = 100
# Paging arguments: an OFFSET of page * page_size (at most FAB's max page size) stays
# far inside PostgreSQL's bigint.
MAX_PAGE = 2**31 - 1
MAX_INT = 2**63 - 1
NUL = "\x00"
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
TOO_DEEP = f"Request body is nested deeper than {MAX_JSON_DEPTH} levels"

# FAB's own filter operators by what their value must be (custom filters are left to
# their own code).
TEXT_OPERATORS = frozenset({"sw", "nsw", "ew", "new", "ct", "nct"})
LIST_OPERATORS = frozenset({"in", "not_in"})
RELATION_OPERATORS = frozenset({"rel_o_m", "nrel_o_m", "rel_m_m"})

RISON_METHODS = frozenset({"get_list", "get", "info"})

# FAB's list pages read these from every argument name that contains them.
PAGE_ARG = re.compile(r"(?:page|psize)_(.*)")
ORDER_ARG = re.compile(r"_oc_(.*)")


def refusal() -> ServiceError | None:
    """The first problem of the current request, or None when it may go on."""
    return (
        _nul_in_request()
        or _json_problem()
        or _view_problem()
    )


def _problem(status: int, message: str, path: str, reason: str) -> ServiceError:
    exc = ServiceError(message, [{"path": path, "message": reason}])
    exc.status = status
    return exc


def _nul_in(pairs: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in pairs:
        if NUL in key or (isinstance(value, str) and NUL in value):
            return printable(key)
    return None


def _nul_in_request() -> ServiceError | None:
    if _has_form():
        # Keep the raw body: parsing the form reads the stream, and a signed webhook
        # delivery (Slack sends a form) is verified over the bytes as they came.
        request.get_data(cache=True)
    path = (
        _nul_in((request.view_args or {}).items())
        or _nul_in(request.args.items(multi=True))
        or (_nul_in(request.form.items(multi=True)) if _has_form() else None)
    )
    if path is None and NUL in request.path:
        path = "$path"
    if path is None:
        return None
    return _problem(422, "Invalid request", path, NUL_MESSAGE)


def _has_form() -> bool:
    return request.method in {"POST", "PUT", "PATCH"} and request.mimetype in {
        "application/x-www-form-urlencoded", "multipart/form-data"}


def _json_problem() -> ServiceError | None:
    if not request.is_json or request.method not in {"POST", "PUT", "PATCH", "DELETE"}:
        return None
    try:
        payload = request.get_json(silent=True)
    except RequestEntityTooLarge:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return PayloadTooLarge(f"Request body is larger than {limit} bytes")
    except RecursionError:
        return _problem(400, TOO_DEEP, "$", "too deeply nested")
    return None if payload is None else _json_value_problem(payload)


def _json_value_problem(payload: Any) -> ServiceError | None:
    """A JSON value's first NUL character or excessive nesting (walked without
    recursion, so any depth the parser accepted is safe to walk)."""
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(payload, (), 1)]
    while stack:
        value, loc, depth = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return _problem(422, "Invalid request", error_path(loc), NUL_MESSAGE)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            return _problem(400, TOO_DEEP, error_path(loc), "too deeply nested")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and NUL in key:
                return _problem(422, "Invalid request", error_path((*loc, printable(key))),
                                NUL_MESSAGE)
            stack.append((item, (*loc, key), depth + 1))
    return None


def _current_view() -> Any:
    """The FAB view or API instance that serves this request (by its blueprint)."""
    appbuilder = current_app.extensions.get("appbuilder")
    if appbuilder is None or request.blueprint is None:
        return None
    for view in appbuilder.baseviews:
        blueprint = getattr(view, "blueprint", None)
        if blueprint is not None and blueprint.name == request.blueprint:
            return view
    return None


def _view_problem() -> ServiceError | None:
    view = _current_view()
    if view is None:
        return None
    method = (request.endpoint or "").rsplit(".", 1)[-1]
    if isinstance(view, BaseApi):
        # The operations that read q (FAB's @rison); elsewhere it is ignored.
        reads_q = method in RISON_METHODS and "q" in request.args
        return _q_problem(view) if reads_q else None
    if method == "action_post" and request.method == "POST":
        return _action_problem(view)
    return _list_args_problem() if hasattr(view, "datamodel") else None


def _action_problem(view: Any) -> ServiceError | None:
    action = request.form.get("action")
    if action in (getattr(view, "actions", None) or {}):
        return None
    return _problem(400, "Unknown action", "action",
                    f"{printable(action)!r} is not an action of this list" if action
                    else "field required")


def _page_problem(raw: Any, path: str) -> ServiceError | None:
    if isinstance(raw, str):
        try:
            value = int(raw)
        except ValueError:
            return _problem(400, "Invalid paging argument", path, "must be an integer")
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        return None  # other types: the caller's schema answers
    if not 0 <= value <= MAX_PAGE:
        return _problem(400, "Invalid paging argument", path,
                        f"must be between 0 and {MAX_PAGE}")
    return None


def _list_args_problem() -> ServiceError | None:
    """The list arguments FAB's pages read (``page_<View>``, ``psize_<View>``,
    ``_oc_<View>``) and pass to ``int()`` or ``ORDER BY`` unchecked."""
    for name, raw in request.args.items():
        if PAGE_ARG.search(name):
            found = _page_problem(raw, name)
            if found:
                return found
        order = ORDER_ARG.search(name)
        if order:
            target = _view_named(order.group(1))
            columns = getattr(target, "order_columns", None)
            if target is not None and columns is not None and raw not in columns:
                return _problem(400, "Invalid sort column", name,
                                f"one of {', '.join(columns)}" if columns else "not sortable")
    return None


def _view_named(name: str) -> Any:
    appbuilder = current_app.extensions["appbuilder"]
    return next((v for v in appbuilder.baseviews if type(v).__name__ == name), None)


UNREADABLE = object()


def _parse_q(value: str) -> Any:
    """``q`` read as FAB's ``@rison`` reads it: rison, else (FAB_API_ALLOW_JSON_QS) JSON;
    ``UNREADABLE`` for what FAB cannot read either."""
    try:
        return prison.loads(value)
    except prison.decoder.ParserException:
        if not current_app.config.get("FAB_API_ALLOW_JSON_QS", True):
            return UNREADABLE
        try:
            return json.loads(parse_qs(f"q={value}")["q"][0])
        except Exception:
            return UNREADABLE
    except Exception:  # FAB catches only prison's own error: 4.6e+80 raised a ValueError
        return UNREADABLE


def _q_problem(api: Any) -> ServiceError | None:
    args = _parse_q(request.args["q"])
    if args is UNREADABLE:
        return _problem(400, "Not a valid rison argument", "q", "not a rison value")
    if not isinstance(args, dict):
        return None
    for key in ("page", "page_size"):
        if key in args:
            found = _page_problem(args[key], f"q.{key}")
            if found:
                return found
    filters = args.get("filters")
    datamodel = getattr(api, "datamodel", None)
    if not isinstance(filters, list) or datamodel is None:
        return None
    for index, flt in enumerate(filters):
        if not isinstance(flt, dict) or flt.get("col") not in (api.search_columns or []):
            continue  # FAB answers these itself
        reason = _filter_value_problem(datamodel, flt["col"], flt.get("opr"), flt.get("value"))
        if reason:
            return _problem(400, "Invalid filter", f"q.filters[{index}].value", reason)
    return None


def _filter_value_problem(datamodel: Any, col: str, opr: Any, value: Any) -> str | None:
    if opr not in map_args_filter:
        return None  # a custom filter of the API reads its own value
    if opr in TEXT_OPERATORS:
        return None if isinstance(value, str) else "must be a string"
    if opr in LIST_OPERATORS:
        if not isinstance(value, list):
            return "must be a list"
        items = value
    elif opr == "rel_m_m" and isinstance(value, list):
        items = value
    else:
        items = [value]
    expected = _expected_type(datamodel, col, relation=opr in RELATION_OPERATORS)
    for item in items:
        if expected == "string" and not isinstance(item, str):
            return "must be a string"
        if expected == "integer" and not (
            isinstance(item, int) and not isinstance(item, bool) and abs(item) <= MAX_INT
        ):
            return f"must be an integer between {-MAX_INT} and {MAX_INT}"
        if expected == "number" and (isinstance(item, bool) or not isinstance(item, int | float)):
            return "must be a number"
        if expected == "boolean" and not isinstance(item, bool):
            return "must be true or false"
        if isinstance(item, dict | list):
            return "must be a single value"
    return None


def _expected_type(datamodel: Any, col: str, relation: bool) -> str | None:
    if relation or datamodel.is_relation(col):
        related = datamodel.get_related_interface(col)
        return _expected_type(related, related.get_pk_name(), relation=False)
    if datamodel.is_string(col) or datamodel.is_text(col):
        return "string"
    if datamodel.is_date(col) or datamodel.is_datetime(col):
        return "string"
    if datamodel.is_boolean(col):
        return "boolean"
    if datamodel.is_integer(col):
        return "integer"
    if datamodel.is_float(col) or datamodel.is_numeric(col):
        return "number"
    return None
