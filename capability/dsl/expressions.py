"""``{{ ... }}`` expressions: a sandboxed Jinja2 with strict undefined names.

Rendering happens in workers and previews, analysis (syntax, referenced names) when a
definition is saved; both use the one environment below, so what validates renders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from capability.dsl import guards
from capability.dsl.budget import (
    Budget,
    BudgetExceeded,
    SizeExceeded,
    check_size,
    limited,
    tick,
    ticking,
)
from capability.dsl.masks import MASK, mask_secrets, mask_text

__all__ = [
    "ITEM_NAMES", "MASK", "SCOPE_NAMES", "Budget", "ExpressionError", "check_syntax",
    "evaluate_condition", "evaluate_items", "find_expressions", "is_template", "mask_secrets",
    "mask_text", "referenced_keys", "referenced_names", "referenced_tasks", "render",
    "secret_references",
    "task_references",
]

SCOPE_NAMES = ("params", "tasks", "run", "secrets", "trigger")
ITEM_NAMES = ("item", "index")

_MARKERS = ("{{", "{%", "{#")
# `9 ** 9 ** 9` would stall a worker long before any time budget could stop it (one
# C call); the other operators are sized by `guards`.
_MAX_POWER_BITS = 4096


class ExpressionError(Exception):
    """An expression failed. The message names the field and the cause; never retried."""

    retriable = False

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(f"{path}: {cause}" if path else cause)
        self.path = path
        self.cause = cause


def is_template(value: Any) -> bool:
    """True for a string that Jinja would treat as more than plain text."""
    return isinstance(value, str) and any(marker in value for marker in _MARKERS)


class _Namespace(dict[str, Any]):
    """A scope mapping that knows its own name, for messages like ``'params' has no 'x'``."""

    __slots__ = ("_label",)

    def __init__(self, label: str, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._label = label


class _Undefined(StrictUndefined):
    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        scope = self._undefined_obj
        if not self._undefined_hint and isinstance(scope, _Namespace):
            if scope._label == "secrets":
                return f"unknown secret {self._undefined_name!r}"
            return f"{scope._label!r} has no {self._undefined_name!r}"
        return str(super()._undefined_message)


def _power_too_big(base: Any, exponent: Any) -> bool:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        return abs(base).bit_length() * exponent > _MAX_POWER_BITS
    return False


class _Generator(CodeGenerator):
    """The code of a template with the budget's checks: every loop iterates through
    ``budget.ticking`` (the time budget can stop a loop with an empty body), and
    ``a ~ b`` goes through the environment, so that its size is checked first."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not _ticks(node.iter):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("ticking"), [node.iter], [],
                                   None, None, lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _ticks(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Call) and isinstance(node.node, nodes.EnvironmentAttribute) \
        and node.node.name == "ticking"


class _Sandbox(ImmutableSandboxedEnvironment):
    ticking = staticmethod(ticking)
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _Generator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: guards.guard_filter(name, function)
                        for name, function in self.filters.items()}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data before methods: `output.json.items` is the key "items" of an API
        # response, not dict.items.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _power_too_big(left, right):
            raise SecurityError("the result of ** would be too large")
        guards.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        tick()  # a macro, or a method: where recursion would go on
        name = getattr(__obj, "__name__", "")
        guards.check_method(getattr(__obj, "__self__", None), name, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return guards.check_length(result, f"the result of {name or 'a call'}")

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            if value.__name__ == "format_map" and args and isinstance(args[0], Mapping):
                guards.check_format(template, (), args[0])
            else:
                guards.check_format(template, args, kwargs)
            return str(wrapper(*args, **kwargs))

        return checked

    @staticmethod
    def joined(parts: tuple[Any, ...]) -> str:
        guards.check_concat(parts)
        return "".join(map(str, parts))


def _bounded_concat(chunks: Iterable[str]) -> str:
    """A template's output, refused once it passes the size cap."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        check_size(size, "the rendered text")
        out.append(chunk)
    return "".join(out)


def _finalize(value: Any) -> Any:
    # Interpolated structures read as JSON (`{"a": 1}`, `true`, `null`), which is what
    # URLs and request bodies expect, rather than Python reprs.
    if value is None or isinstance(value, bool | dict | list | tuple):
        guards.check_result(value)
        return json.dumps(value, default=str, ensure_ascii=False)
    return value


_ENV = _Sandbox(
    undefined=_Undefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize
)
_ENV.concat = _bounded_concat  # type: ignore[method-assign]


@lru_cache(maxsize=4096)
def _parse(text: str) -> nodes.Template:
    return _ENV.parse(text)


@lru_cache(maxsize=4096)
def _template(text: str) -> Template:
    return _ENV.from_string(text)


@lru_cache(maxsize=4096)
def _expression(source: str) -> TemplateExpression:
    return _ENV.compile_expression(source, undefined_to_none=False)


def _single_expression(text: str) -> str | None:
    """The source between ``{{`` and ``}}`` when ``text`` is exactly one expression."""
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    body = _parse(stripped).body
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts = body[0].nodes
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    inner = stripped[2:-2]
    # `{{-` and `-}}` are whitespace control, never part of the expression.
    if inner.startswith(("-", "+")):
        inner = inner[1:]
    if inner.endswith(("-", "+")):
        inner = inner[:-1]
    return inner


# ---------------------------------------------------------------- analysis (save time)

def find_expressions(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every templated string in a nested structure as ``(path, text)``, in document order.

    ``path`` is the prefix: ``find_expressions({"url": "{{ x }}"}, "with")`` gives
    ``[("with.url", "{{ x }}")]``. Dict keys are never templates.
    """
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        if is_template(value):
            found.append((path, value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found.extend(find_expressions(item, _join(path, key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.extend(find_expressions(item, f"{path}[{index}]"))
    return found


def check_syntax(text: str) -> str | None:
    """The compile error of a template in words (``None`` when it compiles)."""
    try:
        _template(text)
    except TemplateSyntaxError as exc:
        where = f" (line {exc.lineno})" if "\n" in text.strip() else ""
        return f"{exc.message or exc}{where}"
    return None


def referenced_keys(text: str, name: str) -> set[str]:
    """Keys read from the scope variable ``name``: ``tasks.a`` and ``tasks['a']`` give 'a'."""
    try:
        tree = _parse(text)
    except TemplateSyntaxError:
        return set()
    keys = {
        node.attr for node in tree.find_all(nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == name
    }
    keys.update(
        node.arg.value for node in tree.find_all(nodes.Getitem)
        if isinstance(node.node, nodes.Name) and node.node.name == name
        and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)
    )
    return keys


def referenced_tasks(text: str) -> set[str]:
    """Task ids an expression reads as ``tasks.<id>`` or ``tasks['<id>']``."""
    return referenced_keys(text, "tasks")


def task_references(value: Any) -> frozenset[str] | None:
    """The keys of ``tasks`` that the templates of ``value`` (a string or a nested
    structure, as ``find_expressions`` walks it) can read, for building only that part
    of the scope. ``None`` when some template reads ``tasks`` as a whole (``tasks[name]``,
    a loop over ``tasks``, ``tasks | length``, ``{% set t = tasks %}``) or does not
    parse: it may then see any task."""
    return _references(value, "tasks")


def secret_references(value: Any) -> frozenset[str] | None:
    """The names of ``secrets`` the templates of ``value`` can read (``None``: any, as
    for ``task_references``): the engine decrypts only those."""
    return _references(value, "secrets")


def _references(value: Any, name: str) -> frozenset[str] | None:
    found: set[str] = set()
    for _, text in find_expressions(value):
        keys = _keys(text, name)
        if keys is None:
            return None
        found |= keys
    return frozenset(found)


@lru_cache(maxsize=4096)
def _keys(text: str, name: str) -> frozenset[str] | None:
    try:
        tree = _parse(text)
    except TemplateSyntaxError:
        return None
    keys: set[str] = set()
    keyed: set[int] = set()  # the `name` nodes read as `name.<key>` or `name['<key>']`
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node  # type: ignore[attr-defined]
        if not (isinstance(base, nodes.Name) and base.name == name):
            continue
        if isinstance(node, nodes.Getattr):
            keys.add(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            keys.add(node.arg.value)
        else:
            continue
        keyed.add(id(base))
    if any(node.name == name and id(node) not in keyed for node in tree.find_all(nodes.Name)):
        return None
    return frozenset(keys)


def referenced_names(text: str) -> set[str]:
    """Top-level names an expression reads that it does not define itself (no globals)."""
    try:
        tree = _parse(text)
    except TemplateSyntaxError:
        return set()
    return set(find_undeclared_variables(tree)) - set(_ENV.globals)


# ---------------------------------------------------------------- rendering (run time)

def render(value: Any, scope: Mapping[str, Any], path: str = "",
           budget: Budget | None = None) -> Any:
    """Render every templated string of a nested structure.

    A string that is exactly one ``{{ ... }}`` (surrounding whitespace aside) yields the
    expression's native value: number, bool, None, list, dict. Any other template is
    rendered to text, with lists, dicts, booleans and None written as JSON. Raises
    ``ExpressionError`` naming ``path`` plus the failing key, with secrets masked.

    The whole structure is evaluated within one ``budget`` (``EXPRESSION_TIMEOUT``, 2 s,
    and ``budget.MAX_SIZE``): past it, the error names the field being evaluated.

    ``scope`` as DSL.md names it: ``params``, ``tasks`` (id -> ``{output, status,
    error}``), ``run`` (``{id, trigger}``), ``secrets`` (name -> value) and, inside
    ``for_each``, ``item`` and ``index``.
    """
    namespaces = _namespaces(scope)
    secrets = _secret_values(scope)
    with limited(budget or Budget()):
        return _render(value, namespaces, path, secrets)


def evaluate_condition(text: str, scope: Mapping[str, Any], path: str = "when",
                       budget: Budget | None = None) -> bool:
    """Truthiness of a ``when`` expression's native value."""
    return bool(render(text, scope, path, budget))


def evaluate_items(value: Any, scope: Mapping[str, Any], path: str = "for_each",
                   budget: Budget | None = None) -> list[Any]:
    """The elements of ``for_each``: a literal list (its strings rendered) or an expression."""
    items = render(value, scope, path, budget)
    if not isinstance(items, list):
        raise ExpressionError(path, f"for_each must yield a list, got {_json_type(items)}")
    return items


def _render(value: Any, scope: dict[str, Any], path: str, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _render_text(value, scope, path, secrets) if is_template(value) else value
    if isinstance(value, Mapping):
        return {key: _render(item, scope, _join(path, key), secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, scope, f"{path}[{i}]", secrets) for i, item in enumerate(value)]
    return value


def _render_text(text: str, scope: dict[str, Any], path: str, secrets: tuple[str, ...]) -> Any:
    try:
        inner = _single_expression(text)
        if inner is not None:
            return guards.check_result(_json_value(_expression(inner)(scope)))
        return _template(text).render(scope)
    except TemplateSyntaxError as exc:
        cause = f"invalid expression: {exc.message or exc}"
    except (SecurityError, SizeExceeded) as exc:
        cause = f"not allowed: {exc}"
    except (UndefinedError, _NotJSON, BudgetExceeded) as exc:
        cause = str(exc)
    except Exception as exc:
        cause = f"{exc} ({type(exc).__name__})"
    # `from None`: the original exception text may hold a secret and would reach logs
    # through the chained traceback.
    raise ExpressionError(path, mask_text(cause, secrets)) from None


class _NotJSON(Exception):
    pass


def _json_value(value: Any) -> Any:
    if isinstance(value, Undefined):
        str(value)  # a strict undefined raises here with its message
        raise _NotJSON("the expression is undefined")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [_json_value(item) for item in value]
    raise _NotJSON(f"the expression yields a {type(value).__name__}, which is not a JSON value")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _namespaces(scope: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(scope)
    for name in ("params", "run", "secrets", "trigger"):
        if type(out.get(name)) is dict:
            out[name] = _Namespace(name, out[name])
    tasks = out.get("tasks")
    if type(tasks) is dict:
        out["tasks"] = _Namespace("tasks", {
            task_id: _Namespace(f"tasks.{task_id}", entry) if type(entry) is dict else entry
            for task_id, entry in tasks.items()
        })
    return out


def _secret_values(scope: Mapping[str, Any]) -> tuple[str, ...]:
    secrets = scope.get("secrets")
    if not isinstance(secrets, Mapping):
        return ()
    return tuple(v for v in secrets.values() if isinstance(v, str) and v)
