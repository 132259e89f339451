"""Connectors become task types (CONNECTORS.md, "SDK"): the built-in ones and those of
the ``apg.connectors`` entry-point group, all or nothing.

``install()`` runs when the capability registers (web, worker and scheduler processes
alike): every connector is checked first (its name, its models, that no other type
has the name), and only then is each registered as a task type (``dsl.registry``: the
definitions' validation and JSON Schema, the editor's list) with an executor that
renders nothing itself (the engine has rendered ``with``), validates ``with`` with the
connector's model, calls ``execute`` and classes what it raised. A connector that
fails a check stops the start, naming itself; none of the batch is registered.

The built-in ``http`` type is no connector, but it may name an ``http`` connection:
its executor is replaced here by one that resolves it the same way (the run's team,
the breaker, the masks: ``through_connection``) and leaves a plain request to the
engine's own (``connectors.http_task``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from flask import current_app
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from app.runtime import interrupt
from app.runtime.redis_conn import get_redis
from capability import dsl
from capability.connectors import breaker
from capability.connectors.sdk import ConnectionType, Connector, ConnectorError, Context
from capability.dsl.fields import RENDERED
from capability.dsl.types import TYPE_NAME_PATTERN
from capability.egress import EgressRefused
from capability.engine.executors import EXECUTORS, Executor, register_task_type
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext, Outcome

log = logging.getLogger("capability.connectors")

GROUP = "apg.connectors"
_NAME = re.compile(TYPE_NAME_PATTERN)
_installed: dict[str, Connector] = {}
# (run id, connection name, settings) -> the connection's type, fields and secret values,
# or None: set by the connections package (``use_resolver``), which imports this one.
Resolver = Callable[[AttemptContext, str, EngineSettings], Any]
_resolver: Resolver | None = None
_types: dict[str, ConnectionType] = {}
_lock = threading.Lock()


class ConnectorRefused(Exception):
    """A connector that cannot be registered; the message names it and says why."""


def builtins() -> list[type[Any]]:
    from capability.connectors.data import JsonPathConnector, ValidateConnector
    from capability.connectors.kv import RedisConnector, RedisType
    from capability.connectors.llm import LlmConnector, OpenAiType
    from capability.connectors.mail import EmailConnector, SmtpType
    from capability.connectors.messaging import (
        AmqpConnector,
        AmqpType,
        MqttConnector,
        MqttType,
        NatsConnector,
        NatsType,
    )
    from capability.connectors.sql import MysqlType, PostgresType, SqlConnector, SqliteType
    from capability.connectors.storage import S3Connector, S3Type
    from capability.connectors.web import (
        HttpType,
        SlackConnector,
        SlackType,
        TeamsConnector,
        TeamsType,
        WebhookConnector,
    )

    return [ValidateConnector, JsonPathConnector, PostgresType, MysqlType, SqliteType,
            SqlConnector, RedisType, RedisConnector, HttpType, SlackType, TeamsType,
            WebhookConnector, SlackConnector, TeamsConnector, SmtpType, EmailConnector,
            AmqpType, AmqpConnector, MqttType, MqttConnector, NatsType, NatsConnector,
            S3Type, S3Connector, OpenAiType, LlmConnector]


def discovered() -> list[type[Any]]:
    """The classes the ``apg.connectors`` entry points name, connectors and connection
    types (an entry point that does not load refuses the whole batch: a half-installed
    plug-in is a broken deployment)."""
    found = []
    for point in entry_points(group=GROUP):
        try:
            found.append(point.load())
        except Exception as exc:
            raise ConnectorRefused(f"connector entry point {point.name!r} ({point.value}) "
                                   f"does not load: {type(exc).__name__}: {exc}") from exc
    return found


def _model(owner: str, attr: str, model: Any, optional: bool = False) -> None:
    if optional and model is None:
        return
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConnectorRefused(f"{owner}: {attr} must be a pydantic model")


def _check_type(cls: Any, taken: set[str]) -> ConnectionType:
    name = getattr(cls, "type", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConnectorRefused(f"{cls.__qualname__}: connection type {name!r} is not a name "
                               "(lowercase letters, digits and '_', starting with a letter)")
    if name in taken:
        raise ConnectorRefused(f"{cls.__qualname__}: connection type {name!r} is already taken")
    _model(f"connection type {name!r}", "Config", getattr(cls, "Config", None))
    _model(f"connection type {name!r}", "Secret", getattr(cls, "Secret", None), optional=True)
    if cls.test is ConnectionType.test:
        raise ConnectorRefused(f"connection type {name!r}: test(context) is not implemented")
    return cls()  # type: ignore[no-any-return]


def _check(cls: Any, taken: set[str], types: set[str]) -> Connector:
    label = getattr(cls, "__qualname__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConnectorRefused(f"{label}: not a subclass of capability.connectors.sdk."
                               "Connector or ConnectionType")
    name = getattr(cls, "type", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConnectorRefused(f"{label}: type {name!r} is not a task type name (lowercase "
                               "letters, digits and '_', starting with a letter)")
    if name in taken:
        raise ConnectorRefused(f"{label}: task type {name!r} is already taken")
    _model(f"connector {name!r}", "With", getattr(cls, "With", None))
    if cls.execute is Connector.execute:
        raise ConnectorRefused(f"connector {name!r}: execute(context) is not implemented")
    unknown = [t for t in cls.connection_types if t not in types]
    if unknown:
        raise ConnectorRefused(f"connector {name!r}: connection type {unknown[0]!r} is not "
                               "registered")
    if cls.connection_types and "connection" not in cls.With.model_fields:
        raise ConnectorRefused(f"connector {name!r}: With needs a connection field (the "
                               "name of a connection of the run's team)")
    try:
        return cls()  # type: ignore[no-any-return]
    except Exception as exc:
        raise ConnectorRefused(f"connector {name!r}: cannot be created: {exc}") from exc


def install(classes: Iterable[type[Any]] | None = None) -> list[str]:
    """Register the built-in and discovered connectors and connection types (or
    ``classes``), all or nothing; the names registered now (none on a second call in
    the process). Connection types come first: a connector names those it uses."""
    with _lock:
        batch = list(builtins()) + discovered() if classes is None else list(classes)
        batch = [c for c in batch if not _has(c)]
        type_names = set(_types)
        types: list[ConnectionType] = []
        for cls in batch:
            if isinstance(cls, type) and issubclass(cls, ConnectionType):
                checked_type = _check_type(cls, type_names)
                type_names.add(checked_type.type)
                types.append(checked_type)
        taken = {t.name for t in dsl.registry} | set(EXECUTORS)
        checked: list[Connector] = []
        for cls in batch:
            if isinstance(cls, type) and issubclass(cls, ConnectionType):
                continue
            connector = _check(cls, taken, type_names)
            taken.add(connector.type)
            checked.append(connector)
        for connection_type in types:
            _types[connection_type.type] = connection_type
        for connector in checked:
            register_task_type(dsl.TaskType(
                connector.type, connector.With, _describe(connector),
                example=dict(connector.example), connection_types=tuple(connector.connection_types),
            ), _executor(connector))
            _installed[connector.type] = connector
        if EXECUTORS.get("http") is not _http:
            register_task_type(dsl.registry.get("http"), _http, replace=True)
    names = [t.type for t in types] + [c.type for c in checked]
    if names:
        log.debug("connectors registered: %s", ", ".join(names))
    return names


def _has(cls: Any) -> bool:
    """Whether this process registered this very class already."""
    name = getattr(cls, "type", None)
    if not isinstance(name, str):
        return False
    is_type = isinstance(cls, type) and issubclass(cls, ConnectionType)
    known: dict[str, Any] = _types if is_type else _installed
    return name in known and type(known[name]) is cls


def use_resolver(resolver: Resolver) -> None:
    """How a task's ``with.connection`` is found (``connections.resolve.for_run``)."""
    global _resolver
    _resolver = resolver


def connection_types() -> dict[str, ConnectionType]:
    return dict(_types)


def installed() -> dict[str, Connector]:
    return dict(_installed)


def _describe(connector: Connector) -> str:
    text = connector.description or connector.With.__doc__ or ""
    return " ".join(text.split())


def _logger(ctx: AttemptContext | None, masks: list[str]) -> Any:
    """``context.log``: a line of the attempt's log (``engine.tasklog``), with the
    connection's secrets masked as well as the team's the task could read."""
    writer = ctx.log if ctx is not None else None
    if writer is None:
        return lambda level, message: None
    writer.add_masks(masks)
    return writer


def _executor(connector: Connector) -> Executor:
    def run(params: dict[str, Any], ctx: AttemptContext, settings: EngineSettings) -> Outcome:
        try:
            with_ = connector.With.model_validate(params, context={RENDERED: True})
        except ValidationError as exc:
            return Outcome.failure(f"with: {exc}", retriable=False)

        def work(found: Any, masks: list[str]) -> Outcome:
            return _call(connector, context_for(
                ctx, settings, with_, found.fields if found else None, masks,
                connection_id=found.id if found else None))

        # None: a connector that needs no connection, or one it is optional for
        named = getattr(with_, "connection", None) if connector.connection_types else None
        return through_connection(ctx, settings, connector.type, connector.connection_types,
                                  named, work)

    run.__name__ = f"connector_{connector.type}"
    return run


# (the resolved connection or None, the values to mask) -> the attempt's outcome
Work = Callable[[Any, list[str]], Outcome]


def through_connection(ctx: AttemptContext, settings: EngineSettings, task_type: str,
                       types: tuple[str, ...], named: Any, work: Work) -> Outcome:
    """Run ``work`` with the connection ``named`` (None: without one): resolved for the
    run's team, of one of ``types``, admitted by its breaker, which the outcome moves;
    its secrets, and whatever ``work`` adds to the list it is given, masked in the
    outcome."""
    masks: list[str] = []
    found = None
    recorded = False
    if named is not None:
        name = str(named)
        found = _resolver(ctx, name, settings) if _resolver else None
        if found is None:
            return Outcome.failure(f"unknown connection {name!r}", retriable=False)
        if found.type not in types:
            return Outcome.failure(
                f"connection {name!r} is a {found.type} connection; {task_type} "
                f"takes {' or '.join(types)}", retriable=False)
        masks = list(found.secrets)  # a copy: run-time credentials join it
        redis = get_redis(current_app)
        allowed, why, recorded = breaker.admit(redis, found.id, settings.breaker_cooldown,
                                               getattr(found, "generation", None))
        if not allowed:
            return Outcome.failure(f"circuit open for connection {name!r} {why}")
    outcome = work(found, masks)
    failed = not outcome.ok and outcome.retriable
    if found is not None and (failed or recorded):  # a success on a clean one: no-op
        breaker.record(redis, found.id, failed, settings.breaker_failures,
                       settings.breaker_cooldown)
    if masks:
        outcome.output = dsl.mask_secrets(outcome.output, masks)
        outcome.error = dsl.mask_text(outcome.error, masks) if outcome.error else None
    return outcome


def _http(params: dict[str, Any], ctx: AttemptContext, settings: EngineSettings) -> Outcome:
    """The built-in ``http`` task, which may name an ``http`` connection (resolved,
    breaker and masks as a connector's) and paginate (``connectors.http_task``)."""
    from capability.connectors import http_task
    from capability.engine.executors import http as plain

    def work(found: Any, masks: list[str]) -> Outcome:
        if found is None and not params.get("paginate"):
            return plain(params, ctx, settings)  # the engine's request, as it always was
        return http_task.execute(params, ctx, settings, context_for(
            ctx, settings, None, found.fields if found else None, masks,
            connection_id=found.id if found else None))

    return through_connection(ctx, settings, "http", http_task.CONNECTION_TYPES,
                              params.get("connection"), work)


def context_for(ctx: AttemptContext | None, settings: EngineSettings, with_: Any,
                connection: dict[str, Any] | None, masks: list[str],
                timeout: float | None = None, connection_id: str | None = None) -> Context:
    """What ``execute`` (or a connection type's ``test``, without an attempt) is given.
    ``masks`` is the caller's list: ``context.mask`` adds to it."""
    limit = timeout or (ctx.timeout if ctx else None) or settings.task_default_timeout

    def endpoint(host: str, port: int) -> str:
        return str(settings.egress.addresses(host, int(port))[0])

    deadline = time.monotonic() + limit

    def http(method: str, url: str, **fields: Any) -> Any:
        from capability.egress import http as egress_http

        timeout = max(0.1, min(deadline - time.monotonic(), settings.http_timeout))
        return egress_http.request(settings.egress, method.upper(), url, timeout=timeout,
                                   **fields)

    def mask(value: str) -> None:
        if isinstance(value, str) and value and value not in masks:
            masks.append(value)

    return Context(with_=with_, attempt_id=ctx.attempt_id if ctx else "test",
                   deadline=deadline, connection=connection, http=http,
                   log=_logger(ctx, masks),
                   cancelled=interrupt.stop_pending, endpoint=endpoint,
                   files_dir=settings.files_dir,
                   settings={"llm_prices": settings.llm_prices},
                   connection_id=connection_id, mask=mask)


def _call(connector: Connector, context: Context) -> Outcome:
    try:
        output = connector.execute(context)
    except (JobTimeoutException, interrupt.JobStopped):
        raise  # the engine's: a timeout or a cancel of the attempt
    except ConnectorError as exc:
        return Outcome.failure(exc.message, retriable=exc.retriable)
    except EgressRefused as exc:
        return Outcome.failure(str(exc), retriable=False)
    except Exception as exc:  # the connector's own classing decides
        return Outcome.failure(f"{type(exc).__name__}: {exc}",
                               retriable=bool(connector.retriable(exc)))
    return Outcome.success(output)
