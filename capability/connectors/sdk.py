"""The connector SDK (CONNECTORS.md, "SDK"): what a connector is, and what it is given.

A connector is a class with ``type`` (its task type's name), ``With`` (the pydantic
model of its ``with``), optionally ``connection_types`` (the kinds of connection it
talks through, each a ``ConnectionType``: its ``Config`` and ``Secret`` models and a
``test``), ``retriable(exc)`` and ``execute(context) -> output``. Built-in connectors
and those of other packages (the ``apg.connectors`` entry-point group) are registered
the same way (``connectors.registry``); ``docs/connector_development.md`` walks through
one.

Kept free of the engine: a connector package imports this module and pydantic only.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from capability.dsl.fields import Templated

__all__ = ["ConnectionType", "Connector", "ConnectorError", "Context", "Templated", "With"]


class With(BaseModel):
    """Base of a connector's ``with`` model: unknown fields are refused (a typo in a
    definition is a 422 naming the field, not a silently ignored setting). A field of a
    type other than text that may be a template (``"{{ params.limit }}"``) is declared
    ``Templated[int]``: the definition is saved with the template, and the value is
    checked once the engine has rendered it."""

    model_config = ConfigDict(extra="forbid")


class ConnectorError(Exception):
    """A failure the connector explains itself: ``message`` becomes the task's error
    (secrets masked by the engine); ``retriable`` says whether the retry policy applies
    (refused connections, timeouts, 429/5xx, deadlocks: yes; bad credentials, bad
    queries, 4xx, schema violations: no)."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retriable = retriable


@dataclass
class Context:
    """What ``execute`` is given for one attempt.

    ``with_``: the rendered ``with``, validated by the connector's model; ``connection``:
    the connection's config and secret fields, decrypted for this call only (None for a
    connector without one); ``log(level, message)``: a line of the attempt's log;
    ``attempt_id``: a stable id of this attempt, to pass on as an idempotency key;
    ``deadline``: ``time.monotonic()`` value by which the work must end; ``cancelled()``:
    whether the attempt was cancelled (long loops check it between steps);
    ``endpoint(host, port)``: the address to connect to, checked by the egress policy;
    ``files_dir``: where local files (a SQLite database) may be; ``http(method, url,
    headers=, json=, data=, params=, auth=)``: an HTTP call under the egress policy;
    ``connection_id``: the connection's id (a key for what is cached per connection);
    ``mask(value)``: a credential obtained at run time (an OAuth2 access token), masked
    from then on like the connection's secrets.

    A connection type's ``test`` gets one too, with ``connection`` set and no ``with_``."""

    with_: Any
    attempt_id: str
    deadline: float
    connection: dict[str, Any] | None = None
    log: Callable[[str, str], None] = field(default=lambda level, message: None)
    cancelled: Callable[[], bool] = field(default=lambda: False)
    # The address to connect to for (host, port), checked by the egress policy: raises
    # when the policy denies it. Connect to what it returns, never to the name again.
    endpoint: Callable[[str, int], str] = field(default=lambda host, port: host)
    # The directory local files may be read and written in (CONNECTION_FILES_DIR).
    files_dir: str = ""
    # ``http(method, url, **requests_fields) -> requests.Response``: an HTTP call under
    # the egress policy (every hop checked, no proxy), timed out at the deadline.
    http: Callable[..., Any] = field(default=lambda *a, **k: None)
    # Deployment settings a connector may read: "llm_prices" (LLM_PRICES).
    settings: Mapping[str, Any] = field(default_factory=dict)
    connection_id: str | None = None
    # A value that is no stored secret but must be masked like one in the attempt's
    # output, error and log lines (a token a connector obtained with the connection).
    mask: Callable[[str], None] = field(default=lambda value: None)

    def file(self, path: str) -> Path:
        """The file ``path`` names under ``files_dir`` (relative paths are taken from
        it); ``ConnectorError`` for a path outside it, or when it is not set."""
        if not self.files_dir:
            raise ConnectorError("local files are off: CONNECTION_FILES_DIR is not set")
        base = Path(self.files_dir).resolve()
        target = (base / path).resolve()
        if target != base and base not in target.parents:
            raise ConnectorError(f"path {path!r} is outside CONNECTION_FILES_DIR ({base})")
        return target

    def remaining(self) -> float:
        """Seconds left before ``deadline`` (never below 0.1: a timeout of 0 means none
        to most client libraries)."""
        return max(0.1, self.deadline - time.monotonic())


class ConnectionType:
    """A kind of connection a team can save (CONNECTIONS: ``postgres``, ``smtp``...):
    ``Config`` (the fields shown to everyone who may see the connection) and ``Secret``
    (write-only fields, encrypted at rest, never shown again), both pydantic models, and
    ``test``: a real round trip (connect and a cheap no-op) that returns what it saw, or
    raises ``ConnectorError`` with the service's own message."""

    type: ClassVar[str]
    Config: ClassVar[builtins.type[BaseModel]]
    Secret: ClassVar[builtins.type[BaseModel] | None] = None
    description: ClassVar[str] = ""

    def test(self, context: Context) -> str:
        """Every connection type implements it: the registry refuses one that does not
        (``registry._check_type``), so this body is never reached."""
        raise NotImplementedError


class Connector:
    """Subclass it; see the module's docstring."""

    # ``type`` shadows the builtin in this class body: the models say ``builtins.type``.
    type: ClassVar[str]
    With: ClassVar[builtins.type[BaseModel]]
    description: ClassVar[str] = ""
    # The connection types ``with.connection`` may name (a connector with any has a
    # ``connection: str`` field in ``With``); () for one that needs no connection.
    connection_types: ClassVar[tuple[str, ...]] = ()
    # An example of ``with`` for the editor's help and the task palette.
    example: ClassVar[dict[str, Any]] = {}

    def retriable(self, exc: Exception) -> bool:
        """Whether an exception ``execute`` raised (other than ``ConnectorError``) is
        worth retrying. Default: no; a connector talking to a network says which are."""
        return False

    def execute(self, context: Context) -> Any:
        """Every connector implements it: the registry refuses one that does not
        (``registry._check``), so this body is never reached."""
        raise NotImplementedError
