"""The statements the engine sends for every task are prepared once per connection on
PostgreSQL (engine.prepared): used as ``EXECUTE`` after the first time, prepared again on
a new connection, and sent as they are when ``DATABASE_PREPARED_STATEMENTS`` is off (a
pooler in transaction mode) or on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from app.extensions import db
from capability.engine import runner, state, success, writes
from tests.support.driver import Driver, executed, statements

_NAMES = {s.name for s in (runner._BEGIN_LOCK, runner._BEGIN_LOCK_EXCLUSIVE, runner._BEGIN_READ,
                           state._BEGIN_BOTH, success._LOCK, success._READ,
                           *writes._ONE.values())}

CHAIN = [{"id": "a", "type": "python",
          "with": {"callable": "tests.support.callables:add", "kwargs": {"a": 1, "b": 1}}},
         {"id": "b", "type": "python", "depends_on": ["a"],
          "with": {"callable": "tests.support.callables:add",
                   "kwargs": {"a": "{{ tasks.a.output }}", "b": 1}}}]


def _postgres(app: Any) -> bool:
    return str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql")


def _outputs(driver: Driver) -> dict[str, Any]:
    return {task_id: row.output for task_id, row in driver.tasks().items()}


@contextmanager
def _by_connection(app: Any) -> Iterator[list[tuple[int, str]]]:
    """The statements run while the block runs, each with its driver connection."""
    seen: list[tuple[int, str]] = []

    def one(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((id(conn.connection.dbapi_connection), statement))

    with executed(app, one):
        yield seen


def test_the_engine_s_statements_are_prepared_once_per_connection(app, client, author):
    with _by_connection(app) as seen:
        for _ in range(2):
            driver = Driver(app, client, author, CHAIN)
            assert driver.drain() == "succeeded"
            assert _outputs(driver) == {"a": 2, "b": 3}
    executes = [s for _, s in seen if s.startswith("EXECUTE apg_")]
    prepares = [(c, s.split()[1]) for c, s in seen if s.startswith("PREPARE apg_")]
    if not _postgres(app):
        assert executes == [] and prepares == []
        return
    # Per run, two begins and two records: each a lock with its read, then a write.
    assert sum(s.startswith("EXECUTE apg_begin_lock") for s in executes) >= 4, executes
    assert sum(s.startswith("EXECUTE apg_success_lock") for s in executes) == 4, executes
    assert sum(s.startswith("EXECUTE apg_success_write") for s in executes) == 4, executes
    # Never twice on one connection (earlier tests may have prepared some already).
    assert len(prepares) == len(set(prepares)), prepares
    with app.app_context():
        names = set(db.session.execute(text(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE 'apg_%'")).scalars())
        db.session.remove()
    assert names <= {name for name in _NAMES}, names


def test_a_new_connection_prepares_them_again(app, client, author):
    assert Driver(app, client, author, CHAIN).drain() == "succeeded"
    with app.app_context():
        db.engine.dispose()  # the pool's connections closed: new ones know nothing
    with _by_connection(app) as seen:
        driver = Driver(app, client, author, CHAIN)
        assert driver.drain() == "succeeded"
    assert _outputs(driver) == {"a": 2, "b": 3}
    if _postgres(app):
        assert any(s.startswith("PREPARE apg_success_read") for _, s in seen), seen


def test_turned_off_they_are_sent_as_they_are(app, client, author, monkeypatch):
    monkeypatch.setitem(app.config, "DATABASE_PREPARED_STATEMENTS", False)
    with statements(app) as seen:
        driver = Driver(app, client, author, CHAIN)
        assert driver.drain() == "succeeded"
    assert _outputs(driver) == {"a": 2, "b": 3}
    assert not [s for s in seen if s.startswith(("EXECUTE apg_", "PREPARE apg_"))], seen
    if _postgres(app):
        assert any(s.startswith("WITH succeeded_attempt") for s in seen), seen
