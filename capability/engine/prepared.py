"""The statements the engine sends for every task, prepared once per database connection
on PostgreSQL.

PostgreSQL plans a statement each time it receives it. For the record of a task's
success (``engine.success``), planning cost three to four times what running did: the
read of the run with its tasks, in a warm session, 0.15 to 0.2 ms planned against
0.04 to 0.05 ms run (``EXPLAIN ANALYZE``); its write, a data-modifying ``WITH`` over three
tables, more. A statement prepared on a connection (``PREPARE``) is planned for its first
five uses and then, when a generic plan is no worse, never again; each use is then
``EXECUTE name(values)``. Several uses go to the server as one string: one round trip.

A statement is prepared on a connection the first time that connection needs it, and
remembered in the connection's ``info`` (kept while the driver's connection lives; a
new connection starts empty). Prepared statements belong to the server's session:
behind a pooler that hands each transaction to any session (PgBouncer's transaction
mode) they are not found; ``DATABASE_PREPARED_STATEMENTS = False`` sends the same
statements unprepared (installation guide).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy.engine import Connection, CursorResult

from app.times import UtcDateTime

_INFO_KEY = "apg_prepared"


@dataclass
class Statement:
    """A Core or ``text()`` statement with a name (unique in this process, a valid SQL
    identifier) to prepare it under."""

    name: str
    statement: Any
    # Per dialect class: (SQL with $n placeholders, parameter names in $n order, each
    # one's bind processor, the compiled statement: it fills in the statement's own
    # constants, ``construct_params``).
    _compiled: dict[type, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def compiled(self, dialect: Any) -> tuple[str, tuple[str, ...], list[Any], Any]:
        kind = type(dialect)
        found = self._compiled.get(kind)
        if found is None:
            with self._lock:
                # Positional ``$n`` with each parameter's type cast in the SQL: what
                # PREPARE needs, and each value is then given by position.
                dollar = kind(paramstyle="numeric_dollar")
                compiled = self.statement.compile(dialect=dollar)
                names = tuple(compiled.positiontup or ())
                processors = [compiled.binds[name].type.bind_processor(dialect)
                              for name in names]
                found = (compiled.string, names, processors, compiled)
                self._compiled[kind] = found
        return found  # type: ignore[no-any-return]


def enabled() -> bool:
    return not has_app_context() or bool(
        current_app.config.get("DATABASE_PREPARED_STATEMENTS", True))


def execute(conn: Connection, *uses: tuple[Statement, dict[str, Any]]) -> CursorResult[Any]:
    """Run ``uses`` (statements with their values) in this order, in one round trip, and
    return the last one's result, its columns as the driver gives them (no result
    types applied: the caller converts what needs it, ``times``). On another database,
    or when turned off, the statements are sent one by one."""
    dialect = conn.dialect
    if dialect.name != "postgresql" or not enabled():
        result: Any = None
        for statement, params in uses:
            result = conn.execute(statement.statement, params)
        return result  # type: ignore[no-any-return]
    info = conn.connection.info
    ready: set[str] = info.setdefault(_INFO_KEY, set())
    parts: list[str] = []
    values: list[Any] = []
    for statement, params in uses:
        sql, names, processors, compiled = statement.compiled(dialect)
        if statement.name not in ready:
            # Through SQLAlchemy, not the driver's cursor: a connection lost here is
            # invalidated and reported as any statement's (the engine's bookkeeping is
            # then done again on a fresh one, ``jobs.retried``).
            conn.exec_driver_sql(f"PREPARE {statement.name} AS {sql}")
            ready.add(statement.name)
        given = compiled.construct_params(params)
        for name, process in zip(names, processors, strict=True):
            value = given[name]
            values.append(process(value) if process is not None else value)
        parts.append(f"EXECUTE {statement.name}({', '.join(['%s'] * len(names))})")
    return conn.exec_driver_sql("; ".join(parts), tuple(values))


_UTC = UtcDateTime()


def times(row: Any, *names: str) -> SimpleNamespace:
    """A result row as attributes, the columns ``names`` as aware UTC datetimes (as the
    models' ``UtcDateTime`` columns read them)."""
    values = row._asdict()
    for name in names:
        values[name] = _UTC.process_result_value(values[name], None)  # type: ignore[arg-type]
    return SimpleNamespace(**values)
