"""Secrets in the engine (DSL.md): a task's templates read ``secrets.<name>`` of its
run's team, and no value ever leaves the engine in clear: outputs, errors, for_each
elements and a sub-workflow's params are stored with ``***`` in place of every value
the task could read (``mask``), whatever put it there (a template, an HTTP server
echoing a token, an exception message).

Only the names a template reads are decrypted (``Plan.secrets``), under the keys of the
unit of work's settings (``EngineSettings.secrets_key``, ``capability.secrets.vault``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.extensions import DbSession
from capability import dsl
from capability.engine import outbox
from capability.engine.settings import EngineSettings


def secret_values(session: DbSession, team_id: str, names: frozenset[str] | None,
                  settings: EngineSettings | None = None) -> Mapping[str, str]:
    """The values of the team's secrets among ``names`` (``None``: all of them). When
    one does not decrypt (its key is gone), reading any of them fails the template that
    reads it, naming the field and the cause: that task fails, not retried, and nothing
    else does. ``settings``: the keys, for a read outside any unit of work (an
    expression's scope, read before it is evaluated with no transaction open); else
    the unit of work's."""
    from capability.secrets import vault

    settings = settings or outbox.of(session).settings
    try:
        return vault.values_for(session, settings.secrets_key, settings.secret_key, team_id,
                                names)
    except vault.SecretsKeyError as exc:
        return _Unreadable(str(exc))


class _Unreadable(dict[str, str]):
    """The secrets of a task when one does not decrypt: any read raises the cause."""

    def __init__(self, cause: str) -> None:
        super().__init__()
        self.cause = cause

    def _fail(self) -> Any:
        raise dsl.ExpressionError("secrets", self.cause)

    def __getitem__(self, key: str) -> str:
        return self._fail()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # Python's own lookups (copy, pickle, Jinja's checks)
            raise AttributeError(name)
        return self._fail()


def values(scope: Mapping[str, Any]) -> list[str]:
    return [v for v in (scope.get("secrets") or {}).values() if isinstance(v, str) and v]


def mask(value: Any, scope: Mapping[str, Any]) -> Any:
    """``value`` with every secret of ``scope`` masked (strings anywhere inside)."""
    found = values(scope)
    return dsl.mask_secrets(value, found) if found else value


def text(message: str | None, scope: Mapping[str, Any]) -> str | None:
    found = values(scope)
    return dsl.mask_text(message, found) if found and message else message
