"""The ``with`` models of the built-in task types (DSL.md, "Built-in task types").

Every field that takes a typed value is ``Templated``: ``seconds: "{{ params.wait }}"``
passes when the definition is saved and is checked once the engine has rendered it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from capability.dsl.agent_steps import AgentWith
from capability.dsl.expressions import referenced_names
from capability.dsl.fields import (
    CALLABLE_PATTERN,
    Duration,
    PositiveDuration,
    Templated,
    WorkflowName,
    rendered,
)

__all__ = [
    "BUILTINS", "AgentWith", "ApprovalWith", "DelayWith", "FailWith", "HttpAuth", "HttpCursor",
    "HttpPaginate", "HttpWith", "NoopWith", "PythonWith", "TransformWith", "WorkflowWith",
]

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class _With(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+", value, re.IGNORECASE):
        raise ValueError("must be an http:// or https:// URL")
    return value


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _url_or_path(value: str, info: ValidationInfo) -> str:
    # With a connection, a path joined to its base URL; `connection` is declared before
    # `url`, so it has been read when this runs.
    if not info.data.get("connection"):
        return _http_url(value)
    if (_SCHEME.match(value) or value.startswith("//")) and not re.match(
            r"^https?://[^\s/?#]+", value, re.IGNORECASE):
        raise ValueError("must be an http:// or https:// URL, or a path under the"
                         " connection's base_url")
    return value


def _scalar_text(value: Any) -> Any:
    # Headers and query values travel as text; `{{ params.limit }}` renders to an int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _query_value(value: Any) -> Any:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str | int | float | bool) for item in values):
        raise ValueError("must be text, a number, a boolean or a list of them")
    if isinstance(value, list):
        return [_scalar_text(item) for item in value]
    return _scalar_text(value)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, int | str) and not isinstance(value, bool) else value


def _text_or_object(value: Any) -> Any:
    if not isinstance(value, str | dict):
        raise ValueError("must be text or an object of form fields")
    return value


@lru_cache(maxsize=512)
def _jsonpath_error(query: str) -> str | None:
    # On first use: JSONPath's parser tables cost every process ~1.4 MB, and only a
    # definition with a `transform` jsonpath needs them.
    from jsonpath_ng.ext import parse as parse_jsonpath

    try:
        parse_jsonpath(query)
    except Exception as exc:  # JSONPathError, and plain Exception from the lexer
        return str(exc) or type(exc).__name__
    return None


def _jsonpath(value: str) -> str:
    error = _jsonpath_error(value)
    if error:
        raise ValueError(f"invalid JSONPath: {error}")
    return value


Method = Annotated[HttpMethod, BeforeValidator(_upper)]
UrlOrPath = Annotated[str, AfterValidator(_url_or_path)]
Text = Annotated[str, BeforeValidator(_scalar_text)]
QueryValue = Annotated[
    str | list[str],
    BeforeValidator(_query_value),
    WithJsonSchema({"anyOf": [{"type": ["string", "number", "boolean"]}, {"type": "array"}]}),
]
FormData = Annotated[
    Any,
    AfterValidator(_text_or_object),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "object"}]}),
]
StatusCode = Annotated[int, Field(ge=100, le=599)]
ExpectStatus = Annotated[
    list[Templated[StatusCode]],
    BeforeValidator(_as_list),
    WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]}
    ),
]
JsonPath = Annotated[str, AfterValidator(_jsonpath)]


def _cursor_path(value: str) -> str:
    if value.startswith("$"):
        return _jsonpath(value)
    if not value or any(not part for part in value.split(".")):
        raise ValueError("must be a JSONPath ($.meta.next) or a dotted path (meta.next)")
    return value


CursorPath = Annotated[str, AfterValidator(_cursor_path)]
MaxPages = Annotated[int, Field(ge=1, le=1000)]


class NoopWith(_With):
    """Does nothing. Output: with.value (any templated structure), or null."""

    value: Any = Field(default=None, description="the task's output")


class FailWith(_With):
    """Never succeeds: fails with the message (to test failure paths and compensation)."""

    message: str = Field(description="the task's error")


class DelayWith(_With):
    """Waits for seconds (a number, or a duration like 30s) without holding a worker."""

    seconds: Templated[Duration] = Field(description=(
        'how long to wait: 30, "30s", "5m" or "{{ params.wait }}"'))


_SECRET_HINT = 'must come from a secret, e.g. "{{ secrets.api_token }}"'


class HttpAuth(_With):
    """basic (username and password) or bearer (token); credentials come from secrets."""

    type: Literal["basic", "bearer"] = Field(description=(
        "basic takes username and password; bearer takes token"))
    username: str | None = Field(default=None, description="basic only (required there)")
    password: str | None = Field(default=None, description=(
        'basic only (required there); from a secret: "{{ secrets.<name> }}"'))
    token: str | None = Field(default=None, description=(
        "bearer only (required there), sent as Authorization: Bearer <token>; from a "
        "secret"))

    @field_validator("password", "token")
    @classmethod
    def _from_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A credential written into the definition would be stored and shown in clear.
        if value is not None and not rendered(info) and "secrets" not in referenced_names(value):
            raise ValueError(_SECRET_HINT)
        return value

    @model_validator(mode="after")
    def _fields_of_type(self) -> HttpAuth:
        if self.type == "basic":
            if self.username is None or self.password is None:
                raise ValueError("basic auth needs username and password")
            if self.token is not None:
                raise ValueError("basic auth takes username and password, not token")
        else:
            if self.token is None:
                raise ValueError("bearer auth needs token")
            if self.username is not None or self.password is not None:
                raise ValueError("bearer auth takes token, not username or password")
        return self


class HttpCursor(_With):
    """Where a page's JSON body gives the next page's cursor, and the query parameter
    that sends it."""

    path: Templated[CursorPath] = Field(description=(
        "where the next cursor is in a page's JSON: a JSONPath or a dotted path"))
    param: str = Field(min_length=1, max_length=128, description=(
        "the query parameter the cursor is sent in"))


class HttpPaginate(_With):
    """Follows the pages of a listing: the Link header's rel="next", or a cursor."""

    type: Literal["link", "cursor"] | None = Field(default=None, description=(
        "link: follow the Link header's rel=\"next\"; cursor: give cursor"))
    cursor: HttpCursor | None = Field(default=None, description=(
        "the next page's cursor: where it is in the body, the parameter it is sent in"))
    max_pages: Templated[MaxPages] = Field(default=100, description=(
        "at most this many pages are requested; the output has their items"))
    items_path: Templated[JsonPath | None] = Field(
        default=None, description="a JSONPath to the items of each page")

    @model_validator(mode="after")
    def _one_way(self) -> HttpPaginate:
        if self.cursor is None and self.type != "link":
            raise ValueError("give type: link (the Link header), or cursor: {path, param}")
        if self.cursor is not None and self.type == "link":
            raise ValueError("type link follows the Link header: it takes no cursor")
        return self


class HttpWith(_With):
    """An HTTP request, optionally through an http connection and over pages. Output:
    {status, headers, json, text}; paginated: {pages, items}.

    Connection errors, timeouts, 429 and 5xx are retried; other unexpected statuses fail.
    """

    connection: str | None = Field(default=None, min_length=1, max_length=63, description=(
        "an http connection of the run's team: base URL, default headers, authentication"))
    method: Templated[Method] = Field(default="GET", description="the HTTP method, in upper case")
    url: Templated[UrlOrPath] = Field(description=(
        "an http:// or https:// URL; with a connection, a path under its base URL"))
    headers: Templated[dict[str, Templated[Text]]] = Field(default_factory=dict, description=(
        "sent as text, over the connection's; an Idempotency-Key with the attempt's id is "
        "added unless set"))
    params: Templated[dict[str, QueryValue]] = Field(
        default_factory=dict, description="the query string; a list repeats the name"
    )
    json_: Any = Field(default=None, alias="json", description="a JSON body (not with data)")
    data: Templated[FormData | None] = Field(
        default=None, description="a form or text body (not with json)"
    )
    timeout: Templated[PositiveDuration | None] = Field(default=None, description=(
        "time limit of the request; default the task's timeout, else 30 s"))
    expect_status: Templated[ExpectStatus | None] = Field(
        default=None, description="accepted statuses; default any 2xx"
    )
    auth: Templated[HttpAuth | None] = Field(default=None, description=(
        "basic or bearer authentication (without a connection)"))
    paginate: Templated[HttpPaginate | None] = Field(default=None, description=(
        "follow pages: a Link header's next, or a cursor from the body; output {pages, items}"))

    @model_validator(mode="after")
    def _one_body(self) -> HttpWith:
        if self.json_ is not None and self.data is not None:
            raise ValueError("use either json or data, not both")
        return self


class TransformWith(_With):
    """Output: value (any templated structure), or the matches of jsonpath in input."""

    value: Any = Field(default=None, description="the output (not with jsonpath or input)")
    jsonpath: Templated[JsonPath | None] = Field(default=None, description=(
        "a JSONPath query of input"))
    input: Any = Field(default=None, description="the data jsonpath queries")

    @model_validator(mode="after")
    def _one_form(self) -> TransformWith:
        given = self.model_fields_set
        if "value" in given and given & {"jsonpath", "input"}:
            raise ValueError("use either value, or jsonpath with input, not both")
        if "jsonpath" in given and "input" not in given:
            raise ValueError("jsonpath needs input: the data to query")
        if "input" in given and "jsonpath" not in given:
            raise ValueError("input needs jsonpath: the query to run on it")
        if not given:
            raise ValueError("set value, or jsonpath and input")
        return self


class PythonWith(_With):
    """Calls a function named "package.module:function" with kwargs; only functions under
    the configured allowed prefixes may run. Output: its (JSON-serialisable) return value."""

    callable: str = Field(pattern=CALLABLE_PATTERN, description=(
        "the function, written literally as package.module:function"))
    kwargs: Templated[dict[str, Any]] = Field(default_factory=dict, description=(
        "its keyword arguments"))


class ApprovalWith(_With):
    """Waits in waiting_approval until a user with the approvers role approves (output:
    {approved_by, comment}) or rejects (the task fails)."""

    message: str = Field(description="what the approver is asked")
    approvers: str | None = Field(default=None, description=(
        "the role that may answer; default anyone who may control the run"))


class WorkflowWith(_With):
    """Runs another workflow of the same team with params. Output: the child run's task
    outputs. Fails if the child run fails; nesting deeper than 10 fails."""

    workflow: Templated[WorkflowName] = Field(description="the child workflow's name")
    params: Templated[dict[str, Any]] = Field(default_factory=dict, description=(
        "the child run's parameters"))


def _summary(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


# Each type's example ``with``, shown by the task palette and the editor's help; a test
# validates every one in a workflow (tests/unit/test_task_help.py).
_EXAMPLES: dict[str, dict[str, Any]] = {
    "noop": {"value": {"ready": True, "run": "{{ run.id }}"}},
    "fail": {"message": "Nothing to load today: stopping here"},
    "delay": {"seconds": "5m"},
    "http": {"method": "POST", "url": "https://api.example.com/v1/orders",
             "json": {"order": "{{ run.id }}"}, "expect_status": [200, 201],
             "auth": {"type": "bearer", "token": "{{ secrets.api_token }}"}},
    "transform": {"jsonpath": "$.items[*].id", "input": "{{ tasks.fetch.output.json }}"},
    "python": {"callable": "reports.daily:summarise",
               "kwargs": {"rows": "{{ tasks.load.output.rows }}"}},
    "approval": {"message": "Publish the report of run {{ run.id }}?",
                 "approvers": "Operator"},
    "workflow": {"workflow": "send-report", "params": {"day": "{{ params.day }}"}},
    "agent": {"instructions": "Read the ticket and classify it. Ticket: {{ params.ticket }}",
              "inputs": {"ticket": "{{ params.ticket }}"},
              "output_schema": {"type": "object", "required": ["category", "confidence"],
                                "properties": {
                                    "category": {"enum": ["bug", "question", "feature"]},
                                    "confidence": {"type": "number"}}},
              "model_hint": "fast",
              "checks": [{"jsonpath": "$.confidence", "min": 0, "max": 1}]},
}

# (name, with model, description, example): ``dsl.types`` makes them the first task types.
BUILTINS: tuple[tuple[str, type[BaseModel], str, dict[str, Any]], ...] = tuple(
    (name, model, _summary(model), _EXAMPLES[name])
    for name, model in (
        ("noop", NoopWith),
        ("fail", FailWith),
        ("delay", DelayWith),
        ("http", HttpWith),
        ("transform", TransformWith),
        ("python", PythonWith),
        ("approval", ApprovalWith),
        ("workflow", WorkflowWith),
        ("agent", AgentWith),
    )
)
