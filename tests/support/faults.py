"""Faults the engine and the web must survive: database connections that die under them
(a PostgreSQL backend terminated, a server restarted, a proxy that dropped the
connection)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa


def _admin(url: sa.URL | str) -> sa.Engine:
    """An engine of its own (not the app's pool) to act from another session."""
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _terminate(url: sa.URL | str, where: str, **params: Any) -> int:
    """Terminate the backends of this database that match ``where``; how many."""
    engine = _admin(url)
    try:
        with engine.connect() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"),
                params).all())
    finally:
        engine.dispose()


def kill_connection(conn: sa.Connection) -> None:
    """Break the connection ``conn`` uses behind SQLAlchemy's back: its next statement
    fails as on a connection reset. PostgreSQL: its backend is terminated from another
    session; SQLite (no server): its DBAPI connection is closed."""
    if conn.dialect.name == "postgresql":
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert _terminate(conn.engine.url, "pid = :pid", pid=pid) == 1
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.close()


def kill_pooled_connections(engine: sa.Engine) -> int:
    """Break every connection ``engine``'s pool holds, behind the pool's back (what a
    database restart does); how many."""
    if engine.dialect.name == "postgresql":
        return _terminate(engine.url, "TRUE")
    # SQLite has no server to restart: close the pooled DBAPI connections themselves.
    records = list(engine.pool._pool.queue)  # type: ignore[attr-defined]
    for record in records:
        record.dbapi_connection.close()
    return len(records)


def breaking_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original(session, ...)`` (an engine step), whose connection is killed just before
    its first call: the step fails on its first statement; later calls run as is."""
    calls = []

    def step(session: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            kill_connection(session.connection())
        return original(session, *args, **kwargs)

    step.calls = calls  # type: ignore[attr-defined]
    return step


@contextmanager
def run_locked(url: sa.URL | str, run_id: str) -> Iterator[Callable[[], int]]:
    """Hold ``run_id``'s row lock (PostgreSQL) from a session of our own; yields a
    function that terminates every backend waiting for that lock (a worker's begin or
    record, blocked on it), returning how many it terminated."""
    engine = _admin(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            conn.execute(sa.text("SELECT id FROM apg_run WHERE id = :id FOR UPDATE"),
                         {"id": run_id})
            me = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

            def terminate_waiters() -> int:
                return _terminate(url, ":me = ANY(pg_blocking_pids(pid))", me=me)

            try:
                yield terminate_waiters
            finally:
                conn.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def terminate_waiters_until(terminate: Callable[[], int], done: Callable[[], bool],
                            timeout: float) -> int:
    """Keep terminating whoever waits for the lock until ``done()``; how many in all."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count += terminate()
        if done():
            return count
        time.sleep(0.05)
    raise AssertionError(f"not done within {timeout}s ({count} backends terminated)")
