"""The workflow definition language (the DSL.md product contract): parse, validate,
render expressions. Pure Python (no Flask, no database), so the API, the workers and
the UI all call the same code.

    result = validate_source(text)            # YAML or JSON text
    if result.valid:
        definition = result.definition        # WorkflowDefinition
        params, errors = validate_params(definition, {"dry_run": True})
        url = render(task.with_["url"], scope, "with.url")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load on first use (PEP 562): a process that needs only the statuses (the
# models, a scheduler) does not import the validator, the expression sandbox, pydantic's
# models of every task type, YAML and JSONPath. The same names twice: type checkers
# read the imports below, the interpreter ``_EXPORTS``
# (tests/unit/test_dsl.py::test_the_package_exports_what_it_declares checks they agree).
if TYPE_CHECKING:
    from capability.dsl.durations import (
        format_duration,
        parse_duration,
    )
    from capability.dsl.expressions import (
        MASK,
        ExpressionError,
        check_syntax,
        evaluate_condition,
        evaluate_items,
        find_expressions,
        is_template,
        mask_secrets,
        mask_text,
        referenced_keys,
        referenced_names,
        referenced_tasks,
        render,
        secret_references,
        task_references,
    )
    from capability.dsl.fields import (
        Duration,
        PositiveDuration,
        Templated,
    )
    from capability.dsl.graph import (
        find_cycles,
        topological_order,
        upstream_map,
    )
    from capability.dsl.issues import (
        ValidationIssue,
        error_path,
        pydantic_issues,
    )
    from capability.dsl.locate import (
        locate,
        locate_issues,
    )
    from capability.dsl.models import (
        DEFAULT_QUEUE,
        CompensateSpec,
        DefaultsSpec,
        ParamSpec,
        RetrySpec,
        TaskSpec,
        WorkflowDefinition,
        effective_queue,
        effective_retry,
        effective_timeout,
    )
    from capability.dsl.params import (
        check_param_value,
        validate_params,
    )
    from capability.dsl.schema import (
        SCHEMA_ID,
        definition_json_schema,
    )
    from capability.dsl.source import (
        SourceError,
        load_source,
        parse_source,
    )
    from capability.dsl.statuses import (
        FINISHED_RUN_STATUSES,
        FINISHED_TASK_STATUSES,
        RunStatus,
        TaskStatus,
        TriggerRule,
    )
    from capability.dsl.types import (
        TaskType,
        TaskTypeRegistry,
        UnknownTaskType,
        registry,
    )
    from capability.dsl.validate import (
        ValidationResult,
        validate_definition,
        validate_source,
    )

_EXPORTS = {
    **dict.fromkeys(("format_duration", "parse_duration"), "durations"),
    **dict.fromkeys((
        "ExpressionError", "MASK", "check_syntax", "evaluate_condition", "evaluate_items",
        "find_expressions", "is_template", "mask_secrets", "mask_text", "referenced_keys",
        "referenced_names", "referenced_tasks", "render", "secret_references",
        "task_references",
    ), "expressions"),
    **dict.fromkeys(("Duration", "PositiveDuration", "Templated"), "fields"),
    **dict.fromkeys(("find_cycles", "topological_order", "upstream_map"), "graph"),
    **dict.fromkeys(("ValidationIssue", "error_path", "pydantic_issues"), "issues"),
    **dict.fromkeys(("locate", "locate_issues"), "locate"),
    **dict.fromkeys((
        "CompensateSpec", "DEFAULT_QUEUE", "DefaultsSpec", "ParamSpec", "RetrySpec",
        "TaskSpec", "WorkflowDefinition", "effective_queue", "effective_retry",
        "effective_timeout",
    ), "models"),
    **dict.fromkeys(("check_param_value", "validate_params"), "params"),
    **dict.fromkeys(("SCHEMA_ID", "definition_json_schema"), "schema"),
    **dict.fromkeys(("SourceError", "load_source", "parse_source"), "source"),
    **dict.fromkeys((
        "FINISHED_RUN_STATUSES", "FINISHED_TASK_STATUSES", "RunStatus", "TaskStatus",
        "TriggerRule",
    ), "statuses"),
    **dict.fromkeys(("TaskType", "TaskTypeRegistry", "UnknownTaskType", "registry"), "types"),
    **dict.fromkeys(("ValidationResult", "validate_definition", "validate_source"), "validate"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(f"{__name__}.{module}")
    value = getattr(loaded, name)
    globals()[name] = value
    if module in _EXPORTS:
        # Importing the submodule ``locate`` set this package's ``locate`` to the module,
        # hiding the function of that name, whichever name was asked for first.
        globals()[module] = getattr(loaded, module)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_QUEUE", "FINISHED_RUN_STATUSES", "FINISHED_TASK_STATUSES", "MASK", "SCHEMA_ID",
    "CompensateSpec", "DefaultsSpec", "Duration", "ExpressionError", "ParamSpec",
    "PositiveDuration", "RetrySpec", "RunStatus", "SourceError", "TaskSpec", "TaskStatus",
    "TaskType", "TaskTypeRegistry", "Templated", "TriggerRule", "UnknownTaskType",
    "ValidationIssue", "ValidationResult", "WorkflowDefinition", "check_param_value",
    "check_syntax", "definition_json_schema", "effective_queue", "effective_retry",
    "effective_timeout", "error_path", "evaluate_condition", "evaluate_items",
    "find_cycles", "find_expressions", "format_duration", "is_template", "load_source",
    "locate", "locate_issues", "mask_secrets",
    "mask_text", "parse_duration", "parse_source", "pydantic_issues", "referenced_keys",
    "referenced_names", "referenced_tasks", "registry", "render", "secret_references",
    "task_references",
    "topological_order", "upstream_map", "validate_definition", "validate_params",
    "validate_source",
]
