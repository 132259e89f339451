"""The APG application factory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, jsonify, render_template, request
from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

import config as default_config
from app import db_pool  # pool listeners (idle connections tested), RetryReads
from app.errors import DATA_ERROR_MESSAGE
from app.extensions import db, init_migrate
from app.process import WEB, WORKER, process_role
from app.security.roles import ADMIN
from app.security.sync import sync_security

# What callers import from the package (tests, bench, `flask --app app`).
__all__ = ["WEB", "WORKER", "InsecureConfiguration", "create_app", "sync_security"]

BASE_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)



class InsecureConfiguration(RuntimeError):
    pass


def _check_config(app: Flask) -> None:
    if app.config["APG_ENV"] != "development" and (
        app.config["SECRET_KEY"] == default_config.DEFAULT_SECRET_KEY
    ):
        raise InsecureConfiguration(
            "SECRET_KEY is the shipped development key; set SECRET_KEY (32+ random bytes) "
            "or APG_ENV=development"
        )
    if len(app.config["SECRET_KEY"]) < 32:
        raise InsecureConfiguration("SECRET_KEY must be at least 32 characters long")
    from app.audit.keys import check as check_audit_key

    if problem := check_audit_key(app.config):
        raise InsecureConfiguration(problem)


def _engine_options(uri: str) -> dict[str, Any]:
    if uri.startswith("sqlite"):
        # Writers queue on SQLite's lock instead of failing at once.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    # Connections that sat idle are tested at checkout (app.db_pool), not every one.
    # execute_batch for the UPDATEs of a flush: a fan-out queues its 1,000 tasks in ten
    # round trips instead of 1,000 (INSERTs are batched by SQLAlchemy already).
    return {"executemany_mode": "values_plus_batch"} if "+psycopg2" in uri else {}


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores ON DELETE CASCADE / RESTRICT unless asked, per connection.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def schema_ready() -> bool:
    return sa_inspect(db.engine).has_table("apg_audit_head")


def _json_errors(app: Flask) -> None:
    @app.before_request
    def _refuse_oversize() -> Any:
        # Refused before any view reads the body, so FAB's @safe cannot turn it into a 500.
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit and (request.content_length or 0) > limit:
            return _error_response(413, f"Request body is larger than {limit} bytes")
        return None

    @app.before_request
    def _refuse_malformed() -> Any:
        from app.input_guard import refusal

        found = refusal()
        if found is None:
            return None
        if request.path.startswith("/api/"):
            return jsonify(found.body()), found.status
        return _error_response(found.status, str(found))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        return _error_response(exc.code or 500, exc.description or exc.name, exc)

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> Any:
        # A value the database refused (out of range, malformed for its type) that no
        # check caught: the client's input, not a fault of ours. No SQL in the answer.
        log.warning("database refused a value: %s", exc.orig)
        db.session.rollback()
        return _error_response(422, DATA_ERROR_MESSAGE)


def _error_response(code: int, message: str, exc: HTTPException | None = None) -> Any:
    """API clients get JSON for every error; browsers get the page in the app's layout."""
    if request.path.startswith("/api/"):
        return jsonify({"message": message}), code
    appbuilder = current_app.extensions.get("appbuilder")
    if appbuilder is None or code not in (400, 403, 404, 413, 422, 429):
        return exc if exc is not None else (message, code)
    if "user" not in g:  # refused (CSRF) before FAB's own before_request set it
        from flask_login import current_user

        g.user = current_user
    return render_template(
        "error.html", appbuilder=appbuilder, base_template=appbuilder.base_template,
        code=code, message=message, wait=_limit_window(exc),
    ), code


def _limit_window(exc: HTTPException | None) -> int | None:
    """Seconds of the rate limit a 429 from the limiter broke (its window), so the page
    can say how long to wait; Flask-Limiter's exception carries the limit."""
    limit = getattr(getattr(exc, "limit", None), "limit", None)
    return int(limit.get_expiry()) if limit is not None else None


def _configure(app: Flask, role: str, test_config: dict[str, Any] | None) -> None:
    app.config.from_object(default_config)
    if test_config:
        app.config.update(test_config)
    app.config["APG_PROCESS"] = role
    app.config["AUTH_ROLE_ADMIN"] = ADMIN  # FAB's name for the role that holds everything
    app.config["SQLALCHEMY_DATABASE_URI"] = default_config.database_url(
        app.config["SQLALCHEMY_DATABASE_URI"]
    )
    _check_config(app)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault("INSTANCE_DIR", app.instance_path)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **_engine_options(app.config["SQLALCHEMY_DATABASE_URI"]),
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    }
    from app import logs

    logs.configure(app.config.get("LOG_LEVEL", "INFO"), app.config.get("ACCESS_LOG") or None)


def _init_web(app: Flask) -> None:
    """Request handling: migrations CLI, request audit, headers, CSRF (web role only)."""
    from flask_wtf.csrf import CSRFProtect

    from app import times
    from app.audit import web
    from app.ids import short_id
    from app.security import api_csrf, headers, login_limits, passwords

    app.config.setdefault("FAB_PASSWORD_COMPLEXITY_VALIDATOR", passwords.validate)
    app.config.setdefault("FAB_INDEX_VIEW", "app.index.HomeView")
    # FAB's own user/role views ask for search filters on relations it cannot filter
    # and says so at every start; nothing we can act on.
    logging.getLogger("flask_appbuilder.models.filters").setLevel(logging.ERROR)
    if app.config.get("PROXY_FIX_X_FOR"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"])  # type: ignore[method-assign]
    # A read that met a dead pooled connection is answered again, not a 500.
    app.wsgi_app = db_pool.RetryReads(app.wsgi_app)  # type: ignore[method-assign]
    times.install_template_helpers(app.jinja_env)  # `when`, `duration`: one way to show times
    init_migrate(app, str(BASE_DIR / "migrations"))  # `flask db`; Alembic loads on use
    web.init_app(app)
    headers.init_app(app)
    # One rule for every short id on a page (lists, breadcrumbs, messages).
    app.jinja_env.filters["short_id"] = short_id
    # Global CSRF: every form POST needs the token. It must exist before FAB builds its
    # API blueprints, which exempt themselves (token auth) when they find it.
    CSRFProtect(app)
    api_csrf.init_app(app)
    login_limits.init_app(app)
    from app import rison_schemas

    rison_schemas.install()  # FAB's `q` checks without re-checking their schemas


def _compose(app: Flask, role: str) -> None:
    """Build FAB (web role) and register every capability through the engine."""
    from app.audit.recorder import row_events_off
    from app.composition.engine import compose, discover
    from app.platform import capability as platform

    web = role == WEB
    with app.app_context():
        ready = web and schema_ready()
        sync = web and bool(app.config.get("APG_SYNC_SECURITY", True)) and ready
        appbuilder = None
        if web:
            from flask_appbuilder import AppBuilder

            appbuilder = AppBuilder(update_perms=sync)
            app.config["FAB_UPDATE_PERMS"] = sync
            appbuilder.init_app(app, db.session)
        else:
            app.config["FAB_UPDATE_PERMS"] = False

        capabilities = [platform, *discover(
            app.config["APG_CAPABILITIES"], app.config["APG_DISCOVER_ENTRY_POINTS"]
        )]
        baseline = None
        if sync:
            from app.security.sync import role_permissions

            baseline = role_permissions(db.session)
        with row_events_off():
            compose(app, appbuilder, db.session, capabilities, with_db=ready, role=role)
        if sync:
            from app.security.sync import sync_security

            sync_security(app, baseline)
        db.session.remove()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    role = process_role((test_config or {}).get("APG_PROCESS", default_config.APG_PROCESS))
    web = role == WEB
    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        # A worker serves nothing: no /static route.
        static_folder=str(BASE_DIR / "static") if web else None,
        instance_path=str(default_config.INSTANCE_DIR),
    )
    _configure(app, role, test_config)
    # JSON keeps the order it was given: a definition's params are shown in its author's.
    app.json.sort_keys = False  # type: ignore[attr-defined]

    from app.audit import recorder, specs
    from app.runtime.redis_conn import resolve_url
    from app.security import access, revocation

    redis_url = resolve_url(app)
    if app.config.get("RATELIMIT_STORAGE_URI") == "redis":
        app.config["RATELIMIT_STORAGE_URI"] = redis_url

    db.init_app(app)
    recorder.install(db.session)
    revocation.install(db.session)
    access.install(db.session)
    specs.register_platform_specs()
    if web:
        _init_web(app)
    _compose(app, role)

    if web:
        # After FAB's own before_request (which sets g.user), so error pages can draw the menu.
        _json_errors(app)
        from app.security import api_keys_web

        api_keys_web.init_app(app)  # a keyed API call acts as the key's user from here on
        from app.health import bp as health_bp

        app.register_blueprint(health_bp)
        from app.extensions import socketio

        socketio.init_app(app, message_queue=redis_url, async_mode="threading")
    # A worker has no Socket.IO server: capability.live publishes through a write-only
    # emitter on the same Redis message queue.

    from app.cli import register_cli

    register_cli(app, role)
    return app
