"""Extension singletons, bound to an application in ``create_app`` (never at import).

Two are created on first use, so that a process which does not use them never imports
them (see docs/developer_guide.md, "Process roles"):

* ``socketio`` (Flask-SocketIO, python-socketio, Engine.IO, requests: about 8 MB):
  the web serves Socket.IO; a worker only publishes, and only once it runs a job; a
  scheduler never does;
* Flask-Migrate (``init_migrate``; Alembic, Mako, Pygments: about 11 MB): only
  ``flask db`` and ``flask_migrate.upgrade()`` need it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeAlias

import click
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Session, scoped_session

if TYPE_CHECKING:
    from flask_socketio import SocketIO

    socketio: SocketIO

from app import fab_lazy

# Before the first flask_appbuilder import of the process: FAB's models without FAB.
fab_lazy.install()

from flask_appbuilder.models.sqla import Model  # noqa: E402

# FAB's models and ours share one MetaData, so Alembic sees every table once.
db = SQLAlchemy(metadata=Model.metadata)

# What services accept: the request-scoped ``db.session`` or a plain Session (workers, tests).
DbSession: TypeAlias = Session | scoped_session[Any]

_lazy_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``socketio``: the one ``SocketIO()`` of the process, created when first asked for."""
    if name != "socketio":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lazy_lock:
        if "socketio" not in globals():
            from flask_socketio import SocketIO

            globals()["socketio"] = SocketIO()
    return globals()["socketio"]


def _migrate_config(app: Flask) -> Any:
    """Flask-Migrate's own set-up of ``app``, done now (it replaces the lazy pieces)."""
    from flask_migrate import Migrate

    lazy = app.extensions.get("migrate")
    if isinstance(lazy, _LazyMigrateConfig):
        Migrate(app, db, directory=lazy.directory)
    return app.extensions["migrate"]


class _LazyMigrateConfig:
    """``app.extensions["migrate"]`` until Flask-Migrate is first used
    (``flask_migrate.upgrade()``, ``flask db ...``, migrations/env.py)."""

    def __init__(self, app: Flask, directory: str) -> None:
        self.app = app
        self.directory = directory

    def __getattr__(self, name: str) -> Any:
        return getattr(_migrate_config(self.app), name)


class _LazyMigrateCommands(click.Group):
    """``flask db``: stands in for Flask-Migrate's command group in ``flask --help``;
    running it runs the real group (its options, callback and commands)."""

    def __init__(self, app: Flask) -> None:
        super().__init__("db", help="Perform database migrations.")
        self.app = app

    def _group(self) -> click.Group:
        _migrate_config(self.app)
        from flask_migrate.cli import db as group

        return group

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        return self._group().make_context(info_name, args, parent=parent, **extra)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self._group().list_commands(ctx))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._group().get_command(ctx, cmd_name)


def init_migrate(app: Flask, directory: str) -> None:
    app.extensions["migrate"] = _LazyMigrateConfig(app, directory)
    app.cli.add_command(_LazyMigrateCommands(app))
