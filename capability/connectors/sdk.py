"""The connector SDK (CONNECTORS.md, "SDK"): what a connector is, and what it is given.

A connector is a class with ``type`` (its task type's name), ``With`` (the pydantic
model of its ``with``), optionally ``Connection`` and ``Secret`` (the models of the
connection type it uses, named ``connection_type``), ``retriable(exc)`` and
``execute(context) -> output``. Built-in connectors and those of other packages (the
``apg.connectors`` entry-point group) are registered the same way
(``connectors.registry``); ``docs/developer_guide.md`` ("Connectors") walks through one.

Kept free of the engine: a connector package imports this module and pydantic only.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from capability.dsl.fields import Templated

__all__ = ["Connector", "ConnectorError", "Context", "Templated", "With"]


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
    whether the attempt was cancelled (long loops check it between steps)."""

    with_: Any
    attempt_id: str
    deadline: float
    connection: dict[str, Any] | None = None
    log: Callable[[str, str], None] = field(default=lambda level, message: None)
    cancelled: Callable[[], bool] = field(default=lambda: False)

    def remaining(self) -> float:
        """Seconds left before ``deadline`` (never below 0.1: a timeout of 0 means none
        to most client libraries)."""
        return max(0.1, self.deadline - time.monotonic())


class Connector:
    """Subclass it; see the module's docstring."""

    # ``type`` shadows the builtin in this class body: the models say ``builtins.type``.
    type: ClassVar[str]
    With: ClassVar[builtins.type[BaseModel]]
    description: ClassVar[str] = ""
    connection_type: ClassVar[str | None] = None
    Connection: ClassVar[builtins.type[BaseModel] | None] = None
    Secret: ClassVar[builtins.type[BaseModel] | None] = None
    # An example of ``with`` for the editor's help and the task palette.
    example: ClassVar[dict[str, Any]] = {}

    def retriable(self, exc: Exception) -> bool:
        """Whether an exception ``execute`` raised (other than ``ConnectorError``) is
        worth retrying. Default: no; a connector talking to a network says which are."""
        return False

    def execute(self, context: Context) -> Any:
        raise NotImplementedError
