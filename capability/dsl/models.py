"""The workflow definition as pydantic models (the shape; validate.py adds the semantics).

Durations are held as float seconds. ``with`` stays a plain dict here: each task type
checks its own parameters (types.py) and templated values only make sense once rendered.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from capability.dsl.expressions import is_template
from capability.dsl.fields import (
    IDENTIFIER_PATTERN,
    TASK_ID_PATTERN,
    Duration,
    PositiveDuration,
    QueueName,
    WorkflowName,
)
from capability.dsl.statuses import TriggerRule

__all__ = [
    "DEFAULT_QUEUE", "MAX_TASKS", "CompensateSpec", "DefaultsSpec", "ParamSpec", "ParamType",
    "RetrySpec", "TaskSpec", "WorkflowDefinition", "effective_queue", "effective_retry",
    "effective_timeout",
]

DEFAULT_QUEUE = "default"
MAX_TASKS = 1000

ParamType = Literal["string", "integer", "number", "boolean", "object", "array"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Model):
    """A typed run input. ``default: null`` is the same as no default."""

    type: ParamType
    default: Any = None
    required: bool = False
    description: str | None = None
    enum: list[Any] | None = Field(default=None, min_length=1)


class RetrySpec(_Model):
    max_attempts: int = Field(default=1, ge=1)
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: Duration = Field(default=1.0, description="wait before the second attempt")
    max_delay: Duration = Field(default=300.0, description="longest wait between attempts")
    jitter: bool = True

    @model_validator(mode="after")
    def _delays_in_order(self) -> RetrySpec:
        if self.max_delay < self.delay:
            raise ValueError("max_delay must not be shorter than delay")
        return self

    def wait_seconds(self, failed_attempts: int, rand: Callable[[], float] | None = None) -> float:
        """How long to wait after ``failed_attempts`` (1 = the first attempt failed).

        Exponential backoff doubles ``delay`` each time, capped at ``max_delay``; jitter
        picks a wait between half and all of it, so retries of many runs spread out.
        """
        steps = max(failed_attempts, 1) - 1
        base = self.delay if self.backoff == "fixed" else self.delay * 2.0 ** min(steps, 64)
        wait = min(base, self.max_delay)
        if self.jitter:
            wait *= 0.5 + 0.5 * (rand or _random.random)()
        return wait


class DefaultsSpec(_Model):
    """Applied to every task that does not set its own."""

    retry: RetrySpec | None = None
    timeout: PositiveDuration | None = None
    queue: QueueName | None = None


class CompensateSpec(_Model):
    type: str = Field(min_length=1)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


_EXPRESSION_HINT = 'an expression in {{ }}, e.g. "{{ params.enabled }}"'


def _when(value: Any) -> Any:
    # Plain text would always be truthy: a `when` that is not an expression is a mistake.
    if not is_template(value):
        raise ValueError(f"must be {_EXPRESSION_HINT}")
    return value


def _for_each(value: Any) -> Any:
    if isinstance(value, list) or is_template(value):
        return value
    raise ValueError(
        'must be a list or an expression that yields one, e.g. "{{ tasks.fetch.output }}"'
    )


When = Annotated[str, BeforeValidator(_when)]
ForEach = Annotated[
    Any,
    BeforeValidator(_for_each),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array"}]}),
]


class TaskSpec(_Model):
    id: str = Field(pattern=TASK_ID_PATTERN)
    type: str = Field(min_length=1, description="a registered task type")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="parameters of the type; templated"
    )
    depends_on: list[str] = Field(default_factory=list)
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    when: When | None = None
    for_each: ForEach = None
    max_parallel: int | None = Field(default=None, ge=1)
    retry: RetrySpec | None = None
    timeout: PositiveDuration | None = None
    compensate: CompensateSpec | None = None
    queue: QueueName | None = None


class WorkflowDefinition(_Model):
    name: WorkflowName
    description: str | None = None
    params: dict[str, ParamSpec] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": IDENTIFIER_PATTERN}}
    )
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    max_active_runs: int | None = Field(default=None, ge=1)
    tasks: list[TaskSpec] = Field(min_length=1, max_length=MAX_TASKS)

    def task(self, task_id: str) -> TaskSpec:
        """The task with this id (``KeyError`` when there is none)."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    @property
    def task_ids(self) -> list[str]:
        return [task.id for task in self.tasks]

    def to_data(self) -> dict[str, Any]:
        """The definition as JSON data in the language's own field names (``with``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def effective_retry(task: TaskSpec, defaults: DefaultsSpec) -> RetrySpec:
    """The task's own retry policy, else the workflow's default, else one attempt."""
    return task.retry or defaults.retry or RetrySpec()


def effective_timeout(task: TaskSpec, defaults: DefaultsSpec) -> float | None:
    """Seconds per attempt, or ``None`` for no limit."""
    return task.timeout if task.timeout is not None else defaults.timeout


def effective_queue(task: TaskSpec, defaults: DefaultsSpec) -> str:
    return task.queue or defaults.queue or DEFAULT_QUEUE
