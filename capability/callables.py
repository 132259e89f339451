"""Which function a ``python`` task may call: the one rule, for the save (the web) and
for the call (the worker).

``callable: "package.module:attr.path"`` names a module under ``PYTHON_TASK_PREFIXES``
and an attribute path in it. Checking the module part alone is not enough: the path is
walked with ``getattr`` and can leave the allowed module through anything it imported
(``json:codecs.open``, ``json:codecs.builtins.open``, ``json:codecs.sys.exit``). So the
path may not step on a module or a Python builtin, and what it reaches must be callable
and *defined* in an allowed module (its ``__module__``), not merely reachable from one.

Only a module under an allowed prefix is ever imported here: importing runs its code.
"""

from __future__ import annotations

import builtins
import importlib
import types
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CallableRefused", "allowed_module", "check", "resolve"]

# The types of functions and methods implemented in C: `len`, `dict.get`, `type.mro`,
# `f.__call__`. None of them is an operator's code.
_BUILTIN_TYPES: tuple[type, ...] = (
    types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType,
    types.WrapperDescriptorType, types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


class CallableRefused(Exception):
    """The callable may not run; the message says why (without the field's name)."""


def allowed_module(name: str | None, prefixes: Iterable[str]) -> bool:
    """``name`` is one of ``prefixes`` or inside one (on dotted boundaries: ``json``
    allows ``json.decoder``, not ``jsonschema``)."""
    if not name:
        return False
    return any(name == p or name.startswith(p + ".") for p in prefixes if p)


def _is_builtin(obj: Any) -> bool:
    if isinstance(obj, _BUILTIN_TYPES):
        return True
    # Builtin classes (`object`, `type`, `open`'s io wrapper is caught by __module__).
    return getattr(obj, "__module__", None) == "builtins" or any(
        obj is value for value in vars(builtins).values()
    )


def resolve(target: str, prefixes: Iterable[str]) -> Callable[..., Any]:
    """The function ``target`` names, or ``CallableRefused``."""
    allowed = tuple(prefixes)
    module_name, _, path = target.partition(":")
    shown = ", ".join(allowed) or "none configured"
    if not allowed_module(module_name, allowed):
        raise CallableRefused(f"{target!r} is not under an allowed prefix ({shown})")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CallableRefused(f"cannot import {target!r}: {exc}") from exc
    walked = module_name
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise CallableRefused(f"cannot import {target!r}: {exc}") from exc
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
        if isinstance(obj, types.ModuleType):
            raise CallableRefused(
                f"{target!r} leaves the allowed modules: {walked} is a module"
                " (name a function defined in an allowed module)")
        if _is_builtin(obj):
            raise CallableRefused(
                f"{target!r} leaves the allowed modules: {walked} is a Python builtin"
                " (name a function defined in an allowed module)")
    if not callable(obj):
        raise CallableRefused(f"{target!r} is not callable")
    defined_in = getattr(obj, "__module__", None)
    if not allowed_module(defined_in, allowed):
        raise CallableRefused(
            f"{target!r} is defined in {defined_in or 'no module'}, which is not under an"
            f" allowed prefix ({shown})")
    return obj  # type: ignore[no-any-return]


def check(target: str, prefixes: Iterable[str]) -> str | None:
    """Why ``target`` may not run, or None."""
    try:
        resolve(target, prefixes)
    except CallableRefused as exc:
        return str(exc)
    return None
