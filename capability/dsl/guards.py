"""Size checks of what an expression builds, made *before* the step that builds it.

One C call (``'x'.zfill(10**9)``, ``'%100000000d' % 1``) cannot be interrupted by the
time budget (``budget``): it would allocate a gigabyte first. The sandbox
(``expressions._Sandbox``) therefore asks these functions how large the result of an
operator, a method or a filter can be, and refuses it over ``budget.max_size()``;
every other call's result is measured after it returns, so each step is bounded by a
constant factor of the cap and a loop of steps by the time budget.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Environment
from jinja2.nodes import EvalContext
from jinja2.runtime import Context

from capability.dsl.budget import check_size, max_size, tick

__all__ = ["check_binop", "check_concat", "check_format", "check_length", "check_method",
           "check_percent", "check_result", "guard_filter", "measure"]


def measure(value: Any, limit: int | None = None) -> int:
    """Characters and items of a value, nested values included (a list holding one
    large string a thousand times counts it a thousand times: that is what its JSON
    would be). Stops counting past ``limit``."""
    limit = max_size() if limit is None else limit
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, range):
            total += len(item)
    return total


def check_result(value: Any, what: str = "the result") -> Any:
    """The whole of a result, nested values included."""
    check_size(measure(value), what)
    return value


def check_length(value: Any, what: str) -> Any:
    """One step's result, by its own length (O(1)): each step is then bounded by a
    constant factor of the cap, and the final result is measured whole."""
    if isinstance(value, str | list | tuple | dict):
        check_size(len(value), what)
    return value


# ---------------------------------------------------------------- operators

def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "+" and isinstance(left, str | list | tuple) \
            and isinstance(right, str | list | tuple):
        check_size(len(left) + len(right), "the result of +")
    elif operator == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(count, int) \
                    and not isinstance(count, bool):
                check_size(measure(seq) * max(count, 0), "the result of *")
    elif operator == "%" and isinstance(left, str):
        check_percent(left, right)


def check_concat(parts: tuple[Any, ...]) -> None:
    """``a ~ b``: the parts as text."""
    check_size(sum(len(p) if isinstance(p, str) else measure(p) + 8 for p in parts),
               "the result of ~")


# ---------------------------------------------------------------- formats

# A conversion of %-formatting: its width and precision (digits or `*`).
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _ints(values: Any) -> list[int]:
    items = values if isinstance(values, tuple | list) else \
        list(values.values()) if isinstance(values, Mapping) else [values]
    return [v for v in items if isinstance(v, int) and not isinstance(v, bool)]


def check_percent(template: str, args: Any) -> None:
    """``'%100000000d' % 1``, ``'%*d' % (10**9, 1)``: no width or precision past the cap."""
    stars = False
    for match in _PERCENT.finditer(template):
        for part in match.groups():
            if part == "*":
                stars = True
            elif part is not None:
                check_size(int(part), "a width or precision of %")
    if stars:
        for value in _ints(args):
            check_size(value, "a width or precision of %")
    check_size(len(template) + measure(args), "the result of %")


def check_format(template: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``'{:>100000000}'.format(1)`` and nested specs (``'{:>{}}'.format(1, 10**9)``)."""
    nested = False
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if not spec:
            continue
        nested = nested or "{" in spec
        for digits in _DIGITS.findall(spec):
            check_size(int(digits), "a width or precision of format")
    if nested:
        for value in _ints(args) + _ints(dict(kwargs)):
            check_size(value, "a width or precision of format")
    check_size(len(template) + measure(args) + measure(dict(kwargs)), "the result of format")


# ---------------------------------------------------------------- methods and filters

def _replace_size(text: str, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(text)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _join_size(separator: Any, items: Any) -> int:
    if not isinstance(items, list | tuple):
        return 0  # measured once built
    sep = len(separator) if isinstance(separator, str) else 0
    return measure(items) + sep * max(len(items) - 1, 0)


def _width(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_method(obj: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A method of ``str`` whose result can be far larger than its arguments."""
    if not isinstance(obj, str):
        return
    what = f"the result of {name}"
    first = args[0] if args else None
    if name in ("zfill", "ljust", "rjust", "center"):
        check_size(_width(first if first is not None else kwargs.get("width")), what)
    elif name == "expandtabs":
        size = _width(first if first is not None else kwargs.get("tabsize", 8))
        check_size(len(obj) + obj.count("\t") * size, what)
    elif name == "replace" and len(args) >= 2:
        check_size(_replace_size(obj, *args[:3]), what)
    elif name == "join" and args:
        check_size(_join_size(obj, args[0]), what)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        check_size(len(obj) * max(longest, 1), what)


def _filter_check(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Filters that take a size: ``replace``, ``center``, ``indent``, ``join``,
    ``format``, ``wordwrap``; ``args[0]`` is the filtered value."""
    value, rest = (args[0], args[1:]) if args else (None, ())
    what = f"the result of the {name} filter"
    text = value if isinstance(value, str) else ""
    if name == "replace" and len(rest) >= 2:
        check_size(_replace_size(text, *rest[:3]), what)
    elif name == "center":
        check_size(_width(rest[0] if rest else kwargs.get("width", 80)), what)
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        each = len(width) if isinstance(width, str) else _width(width)
        check_size(len(text) + (text.count("\n") + 1) * each, what)
    elif name == "join":
        separator = rest[0] if rest else kwargs.get("d", "")
        check_size(_join_size(separator, value), what)
    elif name == "format" and isinstance(value, str):
        check_percent(value, kwargs or rest)
    elif name == "wordwrap":
        wrap = rest[3] if len(rest) > 3 else kwargs.get("wrapstring") or "\n"
        width = _width(rest[0] if rest else kwargs.get("width", 79)) or 1
        check_size(len(text) + (len(text) // max(width, 1) + 1) * len(str(wrap)), what)


_SIZED_FILTERS = frozenset({"replace", "center", "indent", "join", "format", "wordwrap"})


def guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a filter) checked before it runs when it takes a size, and its
    result's length after."""
    what = f"the result of the {name} filter"
    sized = name in _SIZED_FILTERS

    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        if sized:
            _filter_check(name, _values(args), kwargs)
        return check_length(function(*args, **kwargs), what)

    # Jinja passes the context or environment to filters marked for it.
    for mark in ("jinja_pass_arg",):
        if hasattr(function, mark):
            setattr(guarded, mark, getattr(function, mark))
    guarded.__name__ = getattr(function, "__name__", name)
    return guarded


def _values(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The filter's own arguments, without the context or environment Jinja passed."""
    if args and isinstance(args[0], Context | EvalContext | Environment):
        return args[1:]
    return args
