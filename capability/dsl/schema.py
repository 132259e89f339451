"""The published JSON Schema of the definition language (``GET /api/v1/workflows/schema``).

Built from the same pydantic models that validate, so the two cannot drift apart. Each
registered type's ``with`` is tied to its type through ``if``/``then``; the schema
cannot express the semantic rules (ids, cycles, expressions): ``validate_definition``
remains the authority.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from capability.dsl.models import CompensateSpec, TaskSpec, WorkflowDefinition
from capability.dsl.types import TaskTypeRegistry
from capability.dsl.types import registry as default_registry

__all__ = ["SCHEMA_ID", "definition_json_schema"]

SCHEMA_ID = "urn:apg:workflow-definition:v1"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _def_name(refs: Mapping[Any, dict[str, Any]], model: type[BaseModel]) -> str:
    return str(refs[(model, "validation")]["$ref"]).rsplit("/", 1)[-1]


def definition_json_schema(
    registry: TaskTypeRegistry | None = None, schema_id: str = SCHEMA_ID
) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a workflow definition, as a fresh dict."""
    types = list(default_registry if registry is None else registry)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (WorkflowDefinition, "validation"), (TaskSpec, "validation"),
        (CompensateSpec, "validation"),
        *((task_type.with_model, "validation") for task_type in types),
    ]
    refs, top = models_json_schema(models, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = copy.deepcopy(top["$defs"])
    root = defs.pop(_def_name(refs, WorkflowDefinition))

    by_type = [
        {
            "if": {"properties": {"type": {"const": task_type.name}}, "required": ["type"]},
            "then": {"properties": {"with": {"$ref": f"#/$defs/{with_name}"}}},
        }
        for task_type in types
        for with_name in [_def_name(refs, task_type.with_model)]
    ]
    names = [task_type.name for task_type in types]
    for model in (TaskSpec, CompensateSpec):
        spec = defs[_def_name(refs, model)]
        spec["allOf"] = by_type
        spec["properties"]["type"]["examples"] = names
        spec["properties"]["type"]["description"] = (
            f"a registered task type: {', '.join(names)} (each one's with: $defs)"
        )

    return {
        "$schema": _DIALECT,
        "$id": schema_id,
        **root,
        "title": "Workflow definition",
        "description": "A workflow of tasks (APG workflow definition language, v1). Strings"
                       " in with, when and for_each are sandboxed Jinja2 templates.",
        "$defs": defs,
    }
