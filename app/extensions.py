"""Extension singletons, bound to an application in ``create_app`` (never at import)."""

from __future__ import annotations

from flask_appbuilder import AppBuilder
from flask_appbuilder.models.sqla import Model
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy

# FAB's models and ours share one MetaData, so Alembic sees every table once.
db = SQLAlchemy(metadata=Model.metadata)
migrate = Migrate()
socketio = SocketIO()
appbuilder = AppBuilder(update_perms=True)
