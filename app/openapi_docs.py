"""What the OpenAPI document says an API answers, made true of what it does answer.

FAB writes one response schema for every ModelRestApi from templates that assume string
ids (FAB's own security models have integer ones), objects for ``add_columns`` and
``edit_columns`` of ``_info`` (they are lists of fields), and the nested object of a
relation column such as ``tenant.name`` (our APIs send the relation's name, a string).
These functions correct one API's part of the document while FAB builds it; the tests
(tests/integration/test_api_fuzz.py) hold every operation's answers to the result.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

FIELD_LIST: dict[str, Any] = {
    "type": "array",
    "description": "the fields of the form: name, label, type, required, ...",
    "items": {"type": "object"},
}
FILTERS: dict[str, Any] = {
    "type": "object",
    "description": "per searchable column, the filters it accepts",
    "additionalProperties": {
        "type": "array",
        "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "operator": {"type": "string"}}},
    },
}
RELATION_NAME: dict[str, Any] = {
    "type": "string", "nullable": True, "description": "the related row's name",
}


def pk_schema(datamodel: Any) -> dict[str, Any]:
    return {"type": "integer"} if datamodel.is_integer(datamodel.get_pk_name()) else {
        "type": "string"}


def _json_200(operation: dict[str, Any]) -> dict[str, Any] | None:
    responses = operation.get("responses") or {}
    ok = responses.get(200, responses.get("200"))  # a docstring's YAML reads 200 as a number
    try:
        schema = ok["content"]["application/json"]["schema"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return schema.get("properties") if isinstance(schema, dict) else None


def fix_operation(datamodel: Any, method: str, operation: dict[str, Any]) -> None:
    """FAB's generic 200 answer of a list, item or info operation, as it is sent."""
    props = _json_200(operation)
    if props is None or datamodel is None:
        return
    if method == "get_list" and "ids" in props:
        props["ids"] = {"type": "array", "items": pk_schema(datamodel)}
    if method == "get" and "id" in props:
        props["id"] = {**pk_schema(datamodel), "description": "The item id"}
    if method == "info":
        for key in ("add_columns", "edit_columns"):
            if key in props:
                props[key] = FIELD_LIST
        if "filters" in props:
            props["filters"] = FILTERS


def model_columns_as_sent(schema: dict[str, Any] | None, datamodel: Any) -> None:
    """FAB's row schema of a model, as FAB's own models are sent: a to-many relation (a
    user's roles) is a list of objects, a to-one relation may be null (a user nobody
    created), and a naive timestamp has no offset (so it is no RFC 3339 date-time)."""
    if not schema or datamodel is None:
        return
    props = schema.get("properties", {})
    for key, value in list(props.items()):
        if not isinstance(value, dict):
            continue
        if "$ref" in value:
            many = (datamodel.is_relation_many_to_many(key)
                    or datamodel.is_relation_one_to_many(key))
            props[key] = ({"type": "array", "items": value} if many
                          else {"allOf": [value], "nullable": True})
        elif value.get("format") == "date-time" and _naive(datamodel, key):
            props[key] = {k: v for k, v in value.items() if k != "format"}


def _naive(datamodel: Any, key: str) -> bool:
    column = datamodel.list_columns.get(key)
    kind = getattr(column, "type", None)
    return isinstance(kind, sa.DateTime) and not kind.timezone


def relations_by_name(schema: dict[str, Any] | None,
                      renamed: dict[str, str] | None = None) -> None:
    """A row schema whose relation columns are sent as the related row's name (and
    whose ``renamed`` fields are sent under their new names)."""
    if not schema:
        return
    props = schema.get("properties", {})
    for key, value in list(props.items()):
        if isinstance(value, dict) and ("$ref" in value or "allOf" in value):
            props[key] = RELATION_NAME
    for old, new in (renamed or {}).items():
        if old in props:
            props[new] = props.pop(old)
    schema["required"] = [(renamed or {}).get(k, k) for k in schema.get("required", [])]
