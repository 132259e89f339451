"""Connectors become task types (CONNECTORS.md, "SDK"): the built-in ones and those of
the ``apg.connectors`` entry-point group, all or nothing.

``install()`` runs when the capability registers (web, worker and scheduler processes
alike): every connector is checked first (its name, its models, that no other type
has the name), and only then is each registered as a task type (``dsl.registry``: the
definitions' validation and JSON Schema, the editor's list) with an executor that
renders nothing itself (the engine has rendered ``with``), validates ``with`` with the
connector's model, calls ``execute`` and classes what it raised. A connector that
fails a check stops the start, naming itself; none of the batch is registered.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from app.runtime import interrupt
from capability import dsl
from capability.connectors.sdk import Connector, ConnectorError, Context
from capability.dsl.fields import RENDERED
from capability.dsl.types import TYPE_NAME_PATTERN
from capability.engine import masking
from capability.engine.executors import EXECUTORS, Executor, register_task_type
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext, Outcome

log = logging.getLogger("capability.connectors")

GROUP = "apg.connectors"
_NAME = re.compile(TYPE_NAME_PATTERN)
_installed: dict[str, Connector] = {}
_lock = threading.Lock()


class ConnectorRefused(Exception):
    """A connector that cannot be registered; the message names it and says why."""


def builtins() -> list[type[Connector]]:
    from capability.connectors.data import JsonPathConnector, ValidateConnector

    return [ValidateConnector, JsonPathConnector]


def discovered() -> list[type[Connector]]:
    """The classes the ``apg.connectors`` entry points name (an entry point that does not
    load refuses the whole batch: a half-installed plug-in is a broken deployment)."""
    found = []
    for point in entry_points(group=GROUP):
        try:
            found.append(point.load())
        except Exception as exc:
            raise ConnectorRefused(f"connector entry point {point.name!r} ({point.value}) "
                                   f"does not load: {type(exc).__name__}: {exc}") from exc
    return found


def _check(cls: Any, taken: set[str]) -> Connector:
    label = getattr(cls, "__qualname__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConnectorRefused(f"{label}: not a subclass of capability.connectors.sdk."
                               "Connector")
    name = getattr(cls, "type", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConnectorRefused(f"{label}: type {name!r} is not a task type name (lowercase "
                               "letters, digits and '_', starting with a letter)")
    if name in taken:
        raise ConnectorRefused(f"{label}: task type {name!r} is already taken")
    for attr in ("With", "Connection", "Secret"):
        model = getattr(cls, attr, None)
        if attr != "With" and model is None:
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConnectorRefused(f"connector {name!r}: {attr} must be a pydantic model")
    if cls.execute is Connector.execute:
        raise ConnectorRefused(f"connector {name!r}: execute(context) is not implemented")
    try:
        return cls()  # type: ignore[no-any-return]
    except Exception as exc:
        raise ConnectorRefused(f"connector {name!r}: cannot be created: {exc}") from exc


def install(classes: Iterable[type[Connector]] | None = None) -> list[str]:
    """Register the built-in and discovered connectors (or ``classes``) as task types, all
    or nothing; the names registered now (none on a second call in the process)."""
    with _lock:
        batch = list(builtins()) + discovered() if classes is None else list(classes)
        taken = {t.name for t in dsl.registry} | set(EXECUTORS)
        checked: list[Connector] = []
        for cls in batch:
            if getattr(cls, "type", None) in _installed and \
                    type(_installed[cls.type]) is cls:
                continue  # this process has it already
            connector = _check(cls, taken)
            taken.add(connector.type)
            checked.append(connector)
        for connector in checked:
            register_task_type(dsl.TaskType(connector.type, connector.With,
                                            _describe(connector)), _executor(connector))
            _installed[connector.type] = connector
    if checked:
        log.debug("connectors registered: %s", ", ".join(c.type for c in checked))
    return [c.type for c in checked]


def installed() -> dict[str, Connector]:
    return dict(_installed)


def _describe(connector: Connector) -> str:
    text = connector.description or connector.With.__doc__ or ""
    return " ".join(text.split())


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _logger(ctx: AttemptContext) -> Any:
    """``context.log``: a line in the worker's log naming the run, task and attempt,
    with every secret the task could read masked."""
    def write(level: str, message: str) -> None:
        log.log(_LEVELS.get(str(level).lower(), logging.INFO), "run %s task %s attempt %s: %s",
                ctx.run_id, ctx.task.id, ctx.number, masking.text(str(message), ctx.scope))
    return write


def _executor(connector: Connector) -> Executor:
    def run(params: dict[str, Any], ctx: AttemptContext, settings: EngineSettings) -> Outcome:
        try:
            with_ = connector.With.model_validate(params, context={RENDERED: True})
        except ValidationError as exc:
            return Outcome.failure(f"with: {exc}", retriable=False)
        limit = ctx.timeout or settings.task_default_timeout
        context = Context(with_=with_, attempt_id=ctx.attempt_id,
                          deadline=time.monotonic() + limit, log=_logger(ctx),
                          cancelled=interrupt.stop_pending)
        try:
            output = connector.execute(context)
        except (JobTimeoutException, interrupt.JobStopped):
            raise  # the engine's: a timeout or a cancel of the attempt
        except ConnectorError as exc:
            return Outcome.failure(exc.message, retriable=exc.retriable)
        except Exception as exc:  # the connector's own classing decides
            return Outcome.failure(f"{type(exc).__name__}: {exc}",
                                   retriable=bool(connector.retriable(exc)))
        return Outcome.success(output)

    run.__name__ = f"connector_{connector.type}"
    return run
