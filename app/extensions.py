"""Extension singletons, bound to an application in ``create_app`` (never at import)."""

from __future__ import annotations

from typing import Any, TypeAlias

from flask_appbuilder.models.sqla import Model
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Session, scoped_session

# FAB's models and ours share one MetaData, so Alembic sees every table once.
db = SQLAlchemy(metadata=Model.metadata)
migrate = Migrate()
socketio = SocketIO()

# What services accept: the request-scoped ``db.session`` or a plain Session (workers, tests).
DbSession: TypeAlias = Session | scoped_session[Any]
