"""``sql`` on PostgreSQL, MySQL/MariaDB and SQLite (CONNECTORS.md): bound parameters
only, a row limit, a statement timeout, and failures classed (refused connections,
timeouts, deadlocks and serialisation failures are retried; bad SQL and bad
credentials are not).

Each connection (a team's) has a pool per worker process, reused by its tasks; pools
are never shared between connections. SQLAlchemy Core's ``text()`` binds ``:name``
parameters for every driver: a value is always data, never SQL. Network connections go
to the address the egress policy checked (checked again at every attempt).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.runtime import interrupt
from capability.connectors.fields import PasswordSecret
from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)

# SQLSTATEs (PostgreSQL) and error numbers (MySQL) worth a retry: deadlocks,
# serialisation failures, lock waits, a server going away.
RETRIABLE_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57014"}
RETRIABLE_MYSQL = {1205, 1213, 2002, 2003, 2006, 2013}


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Config):
    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str = Field(min_length=1, max_length=128)
    username: str = Field(min_length=1, max_length=128)
    options: dict[str, str] = Field(default_factory=dict, description=(
        "driver options, e.g. {\"sslmode\": \"require\"}"))


class SqliteConfig(_Config):
    path: str = Field(min_length=1, max_length=1024, description=(
        "a file under CONNECTION_FILES_DIR (relative paths are taken from there)"))


def _port(kind: str, connection: dict[str, Any]) -> int:
    return int(connection.get("port") or (5432 if kind == "postgres" else 3306))


def _url(kind: str, connection: dict[str, Any], context: Context,
         address: str | None = None) -> Any:
    from sqlalchemy.engine import URL

    if kind == "sqlite":
        target = context.file(str(connection["path"]))
        if not target.exists():
            raise ConnectorError(f"no SQLite database at {connection['path']!r}")
        return URL.create("sqlite", database=str(target))
    port = _port(kind, connection)
    if address is None:
        address = context.endpoint(str(connection["host"]), port)
    driver = "postgresql+psycopg2" if kind == "postgres" else "mysql+pymysql"
    return URL.create(driver, username=connection["username"],
                      password=connection.get("password") or None, host=address, port=port,
                      database=connection["database"],
                      query=dict(connection.get("options") or {}))


# Engines (each with its connection pool) by connection settings, kept per worker
# process: a task reuses the connections of the tasks before it on the same connection
# (no new TCP connection, no new login, per task). A pool holds connections of one
# team's connection only; a change of its settings (or of the address its name resolves
# to) makes a new engine, and the oldest beyond POOLS are closed.
_ENGINES: OrderedDict[str, Any] = OrderedDict()
_ENGINES_LOCK = threading.Lock()
POOLS = 32
MYSQL_READ_TIMEOUT = 3600  # the longest a statement may run there (per statement: below)


# The engine's key by the connection's fields (the very dict the resolver keeps while
# the connection is unchanged) and the address its host resolved to: a task after the
# first skips building and hashing the URL.
_KEYS: dict[int, tuple[dict[str, Any], str, str]] = {}


def _engine(kind: str, connection: dict[str, Any], context: Context) -> Any:
    from sqlalchemy import create_engine

    address = None
    if kind != "sqlite":  # the egress policy checks the address at every attempt
        address = context.endpoint(str(connection["host"]), _port(kind, connection))
        known = _KEYS.get(id(connection))
        if known is not None and known[0] is connection and known[1] == address:
            with _ENGINES_LOCK:
                found = _ENGINES.get(known[2])
                if found is not None:
                    _ENGINES.move_to_end(known[2])
                    return found
    url = _url(kind, connection, context, address)
    key = hashlib.sha256(url.render_as_string(hide_password=False).encode()).hexdigest()
    if address is not None:
        if len(_KEYS) >= 4 * POOLS:
            _KEYS.clear()
        _KEYS[id(connection)] = (connection, address, key)
    with _ENGINES_LOCK:
        found = _ENGINES.get(key)
        if found is not None:
            _ENGINES.move_to_end(key)
            return found
    args: dict[str, Any] = {}
    if kind == "postgres":
        args = {"connect_timeout": 10}
    elif kind == "mysql":
        args = {"connect_timeout": 10, "read_timeout": MYSQL_READ_TIMEOUT,
                "write_timeout": MYSQL_READ_TIMEOUT}
    else:
        args = {"timeout": 10}
    # No ping before each checkout (a round trip per task): a connection the server
    # dropped fails the statement, which is retried (``classify``: a lost server), and
    # the pool drops it; connections older than 5 minutes are replaced anyway.
    made = create_engine(url, pool_size=2, max_overflow=4, pool_recycle=300,
                         connect_args=args)
    with _ENGINES_LOCK:
        _ENGINES[key] = made
        while len(_ENGINES) > POOLS:
            _ENGINES.popitem(last=False)[1].dispose()
    return made


_TIMEOUT_KEY = "apg_statement_timeout"


def _statement_deadline(conn: Any, kind: str, context: Context) -> None:
    """The statement's timeout, from what is left of the attempt: per transaction on
    PostgreSQL, per session on MariaDB (``max_statement_time``, seconds), a progress
    handler on SQLite (which also stops on cancel)."""
    from sqlalchemy import text

    left = max(1, int(context.remaining()))
    if kind == "postgres":
        # Set for the session and remembered on the connection: a chain of tasks with
        # the same timeout sends it once, not once a task (a round trip each). Kept
        # while it is at most what is left and not much less (a failed statement's
        # rollback may undo it: ``execute`` forgets it then).
        info = conn.connection.info
        kept = info.get(_TIMEOUT_KEY)
        if kept is None or not left * 0.9 <= kept <= left:
            conn.execute(text(f"SET statement_timeout = {left * 1000}"))
            conn.commit()
            info[_TIMEOUT_KEY] = left
    elif kind == "mysql":
        try:
            conn.execute(text(f"SET SESSION max_statement_time = {left}"))
        except Exception:  # MySQL has no such variable; the read timeout still holds
            conn.rollback()
    else:
        raw = conn.connection.driver_connection
        raw.set_progress_handler(
            lambda: 1 if _now() > context.deadline or context.cancelled() else 0, 10_000)


class _Cancel:
    """Asks PostgreSQL to cancel what one connection runs (``pg_cancel_backend`` from the
    client's side), from the thread that stops the job, and never once the statement it
    was made for is over (the connection may run another by then)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.lock = threading.Lock()
        self.live = True

    def __call__(self) -> None:
        with self.lock:
            if self.live:
                self.raw.cancel()

    def over(self) -> None:
        with self.lock:
            self.live = False


def _interruptible(conn: Any, kind: str, work: Any) -> Any:
    """Run ``work()`` (a statement) so that a cancel of the attempt reaches the server: the
    statement runs in this thread, where the stop signal cannot reach it until it
    returns, so the stop asks PostgreSQL to cancel it (``interrupt.on_stop``). A timeout
    needs nothing here: the statement's own timeout is what is left of the attempt's
    (``_statement_deadline``), and the server ends it then."""
    if kind != "postgres":
        return work()
    cancel = _Cancel(conn.connection.dbapi_connection)
    try:
        with interrupt.on_stop(cancel):
            return work()
    finally:
        cancel.over()


# What a driver says when it could not reach the server, or lost it: worth a retry.
TRANSIENT = ("connection refused", "timeout expired", "timed out", "could not connect",
             "server closed the connection", "database is locked", "connection reset",
             "could not translate host name")


def classify(exc: Exception) -> bool:
    """Whether a database error is worth a retry."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return isinstance(exc, (ConnectionError, TimeoutError))
    orig = exc.orig
    code = getattr(orig, "pgcode", None)
    if code:
        return code in RETRIABLE_SQLSTATES
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in RETRIABLE_MYSQL
    if exc.connection_invalidated:
        return True
    text = str(orig).lower()
    return any(words in text for words in TRANSIENT)


def _message(exc: Exception) -> str:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        text = str(exc.orig).strip().splitlines()
        return f"{type(exc.orig).__name__}: {' '.join(line.strip() for line in text)}"
    return f"{type(exc).__name__}: {exc}"


class _ServerType(ConnectionType):
    Config = ServerConfig
    Secret = PasswordSecret

    def test(self, context: Context) -> str:
        from sqlalchemy import text

        assert context.connection is not None
        try:
            with _engine(self.type, context.connection, context).connect() as conn:
                version = conn.execute(text("SELECT version()")).scalar()
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(_message(exc), retriable=classify(exc)) from None
        return f"connected: {version}"


class PostgresType(_ServerType):
    type = "postgres"
    description = "A PostgreSQL database (the sql connector)."


class MysqlType(_ServerType):
    type = "mysql"
    description = "A MySQL or MariaDB database (the sql connector)."


class SqliteType(ConnectionType):
    type = "sqlite"
    Config = SqliteConfig
    description = "A SQLite file under CONNECTION_FILES_DIR (the sql connector)."

    def test(self, context: Context) -> str:
        from sqlalchemy import text

        assert context.connection is not None
        try:
            with _engine("sqlite", context.connection, context).connect() as conn:
                version = conn.execute(text("SELECT sqlite_version()")).scalar()
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(_message(exc), retriable=classify(exc)) from None
        return f"opened: SQLite {version}"


class SqlWith(With):
    """Runs one SQL statement on a postgres, mysql or sqlite connection, with params bound
    (never interpolated). Output: {rows: [{column: value}], rowcount, columns}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "a postgres, mysql or sqlite connection of the run's team"))
    query: str = Field(min_length=1, max_length=100_000, description=(
        "one statement; parameters written :name"))
    params: Templated[dict[str, Any] | list[Any]] = Field(default_factory=dict, description=(
        "the values of the :name parameters: always bound, never pasted into the SQL"))
    fetch: Literal["all", "one", "none"] = Field(default="all", description=(
        "which rows to return"))
    max_rows: Templated[int] = Field(default=1000, ge=1, le=100_000, description=(
        "more rows fail the task (add a LIMIT)"))
    timeout: Templated[float | None] = Field(default=None, gt=0, description=(
        "seconds the statement may run (default: what is left of the task's timeout)"))


class SqlConnector(Connector):
    type = "sql"
    With = SqlWith
    connection_types = ("postgres", "mysql", "sqlite")
    example = {"connection": "warehouse",
               "query": "SELECT id, total FROM orders WHERE day = :day",
               "params": {"day": "{{ params.day }}"}}

    def retriable(self, exc: Exception) -> bool:
        return classify(exc)

    def execute(self, context: Context) -> Any:
        from sqlalchemy import text

        with_: SqlWith = context.with_
        assert context.connection is not None
        kind = str(context.connection["type"])
        if with_.timeout is not None:
            context.deadline = min(context.deadline, _now() + float(with_.timeout))
        statement = text(with_.query)
        params = with_.params
        if isinstance(params, list):
            raise ConnectorError("with.params: give named parameters ({\"day\": ...}, used "
                                 "as :day in the query)")
        info: dict[str, Any] = {}
        try:
            with _engine(kind, context.connection, context).connect() as conn:
                info = conn.connection.info
                _statement_deadline(conn, kind, context)
                result = _interruptible(conn, kind, lambda: conn.execute(statement, params))
                columns = list(result.keys()) if result.returns_rows else []
                rows: list[dict[str, Any]] = []
                if result.returns_rows and with_.fetch != "none":
                    limit = 1 if with_.fetch == "one" else with_.max_rows
                    fetched = result.fetchmany(limit + 1)
                    if len(fetched) > limit and with_.fetch == "all":
                        raise ConnectorError(f"the query returned more than max_rows "
                                             f"({limit}) rows: add a LIMIT, or raise max_rows")
                    rows = [_jsonable(dict(zip(columns, row, strict=True)))
                            for row in fetched[:limit]]
                rowcount = result.rowcount
                conn.commit()
        except ConnectorError:
            info.pop(_TIMEOUT_KEY, None)
            raise
        except Exception as exc:
            info.pop(_TIMEOUT_KEY, None)
            raise ConnectorError(_message(exc), retriable=classify(exc)) from None
        context.log("info", f"{kind}: {len(rows)} rows, rowcount {rowcount}")
        if with_.fetch == "one":
            return {"row": rows[0] if rows else None, "rowcount": rowcount, "columns": columns}
        return {"rows": rows, "rowcount": rowcount, "columns": columns}


def _now() -> float:
    import time

    return time.monotonic()


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt
    import decimal
    import uuid

    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, decimal.Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        elif isinstance(value, (dt.datetime, dt.date, dt.time)):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).hex()
        out[key] = value
    return out

