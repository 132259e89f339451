"""Logging of every process: what an operator reads at INFO, request lines elsewhere.

At ``LOG_LEVEL=INFO`` (the default) the log says what happened to the installation:
what listens where, workers and the scheduler starting and stopping, schema upgrades,
who logged in or failed to, runs started and finished, warnings and errors. Request
lines (pages, static files, the Socket.IO polls of a run page: thousands an hour) go
to the ``app.access`` logger at DEBUG, or to the file ``ACCESS_LOG`` when set.

Libraries that narrate their own plumbing at INFO (FAB creating permissions, RQ
announcing every job, Alembic loading plugins) are held at WARNING, so their warnings
and errors still show; ``LOG_LEVEL=DEBUG`` lets everything through.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

ACCESS_LOGGER = "app.access"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# Loggers whose INFO is plumbing, not news for an operator.
QUIET = (
    "flask_appbuilder",        # "Initializing AppBuilder", one line per permission created
    "rq.worker",               # every job taken and finished; app.runtime.worker says hello
    "rq.job",
    "rq.scheduler",            # "Acquired scheduler lock for high" per queue
    "alembic.runtime.plugins",  # "setup plugin alembic.autogenerate..." at every start
    "mcp",                     # the MCP SDK: "Terminating session: None" per /mcp request
)
# Never below WARNING: at DEBUG, SQLAlchemy's engine logger would print every statement,
# and the clients connectors use would print request lines, headers and payloads, where
# a connection's secret is (a webhook URL's path, a token).
ALWAYS_QUIET = ("sqlalchemy", "urllib3", "botocore", "boto3", "s3transfer", "pika", "nats",
                "paho")
# python-socketio and python-engineio give a logger without a level a handler of their
# own (each line would be printed twice) and the level ERROR (logger=False). Setting the
# level here keeps their handler out. ERROR as they would: their warnings are about
# browsers ("Cannot send to sid", a refused connection), their errors about Redis.
SOCKETIO = ("socketio.server", "engineio.server", "socketio.client", "engineio.client")


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The console handler this module installed (found again on a second app)."""


# Marks the ACCESS_LOG handler this module added (found again by a second app).
_ACCESS_FILE = "_apg_access_file"


class _AlembicChatter(logging.Filter):
    """Alembic says which migration runs (kept) and, at every start, which dialect it
    uses and whether DDL is transactional (dropped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("Context impl ", "Will assume "))


def _level(value: Any) -> int:
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value).strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                         f"not {value!r}")
    return level


def configure(level_name: Any, access_log: str | None = None) -> None:
    """Set up the root logger (once per process, unless someone else did already, as
    pytest does), the level of the chatty libraries and where request lines go."""
    level = _level(level_name)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _OurHandler)]
    if not root.handlers or ours:
        if not ours:
            handler = _OurHandler()
            handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
            root.addHandler(handler)
        root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING if level > logging.DEBUG
                                         else logging.NOTSET)
    for name in ALWAYS_QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SOCKETIO:
        logging.getLogger(name).setLevel(logging.ERROR if level > logging.DEBUG
                                         else logging.DEBUG)
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicChatter) for f in migration.filters):
        migration.addFilter(_AlembicChatter())
    _configure_access(access_log)


def _check_writable(path: str) -> None:
    """A bad ACCESS_LOG stops the start with its reason, not a traceback per request."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValueError(f"ACCESS_LOG={path} is a directory: name a file")
    if not target.parent.is_dir():
        raise ValueError(f"ACCESS_LOG={path}: the directory {target.parent} does not exist")
    writable = os.access(target, os.W_OK) if target.exists() else os.access(
        target.parent, os.W_OK)
    if not writable:
        raise ValueError(f"ACCESS_LOG={path} cannot be written by this user")


def _configure_access(path: str | None) -> None:
    if path:
        _check_writable(path)
    access = logging.getLogger(ACCESS_LOGGER)
    for old in [h for h in access.handlers if getattr(h, _ACCESS_FILE, False)]:
        access.removeHandler(old)
        old.close()
    if path:
        # Only with ACCESS_LOG: logging.handlers costs every process ~1 MB.
        from logging.handlers import WatchedFileHandler  # reopened when logrotate moves it

        handler = WatchedFileHandler(path, encoding="utf-8", delay=True)
        setattr(handler, _ACCESS_FILE, True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", DATE_FORMAT))
        access.addHandler(handler)
        access.setLevel(logging.DEBUG)
        access.propagate = False  # the file only: the console keeps its INFO
    else:
        access.setLevel(logging.NOTSET)
        access.propagate = True  # DEBUG on the console when LOG_LEVEL=DEBUG


def access_logger() -> logging.Logger:
    return logging.getLogger(ACCESS_LOGGER)
