"""Application settings, every one read from an environment variable.

Flask-AppBuilder reads the upper-case names of this module (``app.config.from_object``).
Nothing here opens a connection: ``create_app`` decides what the values mean.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("APG_INSTANCE_DIR", BASE_DIR / "instance"))

# The shipped key only exists so that `make run` works on a laptop; create_app refuses
# to start with it when APG_ENV is anything but "development".
DEFAULT_SECRET_KEY = "apg-development-only-secret-key-change-me-0123456789"


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_url(raw: str) -> str:
    """We ship psycopg2; SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg2://" + raw[len(prefix):]
    return raw


APG_ENV = os.environ.get("APG_ENV", "development")
SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
# Fernet keys for workflow secrets at rest, comma-separated: the first encrypts, every
# one decrypts (to rotate: put a new key first, run `flask --app app secrets rotate`).
# Empty: one key derived from SECRET_KEY (changing SECRET_KEY then loses the secrets).
SECRETS_KEY = os.environ.get("SECRETS_KEY", "")
# The HMAC key of the audit chain (32+ characters), kept out of the database so that
# someone who can write the tables cannot recompute the chain after an edit. Required
# outside development; empty in development: derived from SECRET_KEY.
AUDIT_KEY = os.environ.get("AUDIT_KEY", "")
# Where the scheduler and `flask --app app audit checkpoint` append the chain's head
# (one JSON line each, never rewritten) and `audit verify` reads it back; empty:
# instance/audit-checkpoints/. Ship it off the machine (installation guide).
AUDIT_CHECKPOINT_DIR = os.environ.get("AUDIT_CHECKPOINT_DIR", "")
# Seconds between two checkpoints written by the scheduler (0: none, only on demand).
AUDIT_CHECKPOINT_INTERVAL = _int("AUDIT_CHECKPOINT_INTERVAL", 300)

# Storage. Unset means the embedded defaults: a SQLite file under instance/ and an
# embedded Redis server started by `flask --app app up` (or by the test suite).
SQLALCHEMY_DATABASE_URI = database_url(
    os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'apg.db'}"
)
SQLALCHEMY_TRACK_MODIFICATIONS = False
# PostgreSQL: the engine prepares the statements it sends for every task once per
# connection (capability/engine/prepared.py). Off behind a pooler in transaction mode
# (PgBouncer's default), where a prepared statement is not found in the next transaction.
DATABASE_PREPARED_STATEMENTS = _bool("DATABASE_PREPARED_STATEMENTS", True)
REDIS_URL = os.environ.get("REDIS_URL", "")
RQ_QUEUES = _list("RQ_QUEUES", ["high", "default", "low"])
# A task without its own `timeout` may run this long (seconds) before RQ stops it.
TASK_DEFAULT_TIMEOUT = _int("TASK_DEFAULT_TIMEOUT", 3600)
# `python` tasks may only name callables in these packages (DSL.md); empty = none.
PYTHON_TASK_PREFIXES = _list("PYTHON_TASK_PREFIXES", [])
# Where tasks may connect (`http` tasks, and every connector): entries are CIDRs,
# addresses or host names with an optional :port, separated by commas or spaces.
# Loopback, link-local (cloud metadata) and the app's own database and Redis are denied
# unless allowed; deny wins over allow (capability/egress/policy.py).
EGRESS_DENY = os.environ.get("EGRESS_DENY", "")
EGRESS_ALLOW = os.environ.get("EGRESS_ALLOW", "")
# Seconds one evaluation of a task's expressions (`with`, `when`, `for_each`) may take;
# past it the task fails (capability/dsl/budget.py).
EXPRESSION_TIMEOUT = float(os.environ.get("EXPRESSION_TIMEOUT") or 2)
# The largest output (bytes of its JSON) a task attempt may store; past it the task fails.
TASK_OUTPUT_MAX_BYTES = _int("TASK_OUTPUT_MAX_BYTES", 1024 * 1024)
# Lines an attempt's log keeps (what its connector or python callable wrote); the rest
# are counted as `truncated`.
TASK_LOG_MAX_LINES = _int("TASK_LOG_MAX_LINES", 2000)
# Per-team quotas on run starts (0 = no limit). Runs not finished (queued, running,
# paused; sub-workflow runs included) and runs started in the last minute (sub-workflow
# runs excluded): a start over either is refused with 429 and Retry-After.
TEAM_MAX_ACTIVE_RUNS = _int("TEAM_MAX_ACTIVE_RUNS", 1000)
TEAM_RUN_RATE = _int("TEAM_RUN_RATE", 600)
# Connections (CONNECTORS.md): where a `sqlite` connection's file may be (a path outside
# this directory is refused: a connection must not read the app's own database).
CONNECTION_FILES_DIR = os.environ.get("CONNECTION_FILES_DIR") or str(INSTANCE_DIR / "files")
# A connection's circuit breaker: this many connection failures in a row (0: never)
# make its tasks fail fast for this many seconds, then one attempt probes it.
CONNECTION_BREAKER_FAILURES = _int("CONNECTION_BREAKER_FAILURES", 5)
CONNECTION_BREAKER_COOLDOWN = _int("CONNECTION_BREAKER_COOLDOWN", 60)
# The `llm` connector's prices, to turn token usage into cost: JSON, per model, per
# 1,000 tokens, e.g. {"gpt-4o-mini": {"prompt": 0.00015, "completion": 0.0006}}.
LLM_PRICES = os.environ.get("LLM_PRICES") or "{}"
# Schedules (TRIGGERS.md): after downtime, at most this many missed ticks of one
# schedule are caught up per scheduler pass.
SCHEDULE_CATCHUP_MAX = _int("SCHEDULE_CATCHUP_MAX", 100)
# The most runs one backfill may ask for (its max_runs is at most this).
BACKFILL_MAX = _int("BACKFILL_MAX", 1000)
# Webhooks (TRIGGERS.md): the largest body, deliveries a minute per webhook (0: no
# limit), how long a delivery id is remembered (seconds) and the log kept (days).
WEBHOOK_MAX_BYTES = _int("WEBHOOK_MAX_BYTES", 256 * 1024)
WEBHOOK_RATE_LIMIT = _int("WEBHOOK_RATE_LIMIT", 60)
WEBHOOK_DEDUPE_WINDOW = _int("WEBHOOK_DEDUPE_WINDOW", 24 * 3600)
WEBHOOK_LOG_DAYS = _int("WEBHOOK_LOG_DAYS", 14)
# A run started by an event (a run finishing, a named event) is one hop deeper than its
# cause; a trigger whose run would be deeper than this starts nothing (loops end).
EVENT_MAX_DEPTH = _int("EVENT_MAX_DEPTH", 10)
# Workers and schedulers that lose Redis try again after 1, 2, 4 ... seconds, at most
# this many between tries, for as long as it takes.
REDIS_RECONNECT_MAX = _int("REDIS_RECONNECT_MAX", 30)
# A task's or element's output whose JSON is longer than this many characters is shown
# cut (a preview and its size) in a run's JSON and page; fetched whole from
# GET /api/v1/runs/<id>/tasks/<task_id>/output.
API_VALUE_MAX_CHARS = _int("API_VALUE_MAX_CHARS", 65536)
PORT = _int("PORT", 8080)
# Seconds after start during which /health does not count a queue without a live
# worker as a failure (workers start alongside the web server).
HEALTH_WORKER_GRACE = _int("HEALTH_WORKER_GRACE", 60)
WORKERS = _int("WORKERS", 2)

# Flask-AppBuilder
APP_NAME = os.environ.get("APP_NAME", "APG Workflow Orchestration")
APP_ICON = ""
FAB_SECURITY_MANAGER_CLASS = "app.security.manager.ApgSecurityManager"
FAB_ADD_SECURITY_API = True
FAB_API_SWAGGER_UI = True
FAB_API_MAX_PAGE_SIZE = _int("FAB_API_MAX_PAGE_SIZE", 100)
# Migrations own the schema; the app still fills in permissions at start.
FAB_CREATE_DB = False
FAB_UPDATE_PERMS = True
# The process role: "web" (everything: the default) or "worker" (RQ workers, the
# scheduler, `audit verify`: models, services, the engine and the CLI, without views,
# REST APIs, Swagger, templates or the Socket.IO server; about half the memory).
# `python -m app worker|scheduler` always runs in the worker role; see
# docs/developer_guide.md, "Process roles".
APG_PROCESS = os.environ.get("APG_PROCESS", "web").strip().lower() or "web"
# Publish live run updates (Socket.IO through Redis) as runs change.
APG_LIVE_UPDATES = _bool("APG_LIVE_UPDATES", True)
# Create permissions and re-sync roles at start. `up` turns it off in its worker and
# scheduler children; a fleet can turn it off on all but one process.
APG_SYNC_SECURITY = _bool("APG_SYNC_SECURITY", True)
# AUTH_ROLE_ADMIN is set by create_app from app.security.roles (the one place roles are named).
AUTH_ROLE_PUBLIC = "Public"
AUTH_USER_REGISTRATION = False
AUTH_TYPE = 1  # AUTH_DB
AUTH_RATE_LIMITED = _bool("AUTH_RATE_LIMITED", True)
AUTH_RATE_LIMIT = os.environ.get("AUTH_RATE_LIMIT", "10 per minute")
RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
RATELIMIT_HEADERS_ENABLED = True
# API keys (app/security/api_keys.py): FAB's protect() hands `Authorization: Bearer apk_...`
# to our security manager, which checks our own keys (FAB's key tables and API unused).
FAB_API_KEY_ENABLED = True
FAB_API_KEY_PREFIXES = ["apk_"]
# Requests per key, shared by every web process (Redis); `limits` notation.
API_KEY_RATE_LIMIT = os.environ.get("API_KEY_RATE_LIMIT", "600 per minute")
# The server secret keys are hashed with; default: derived from SECRET_KEY. Changing
# either invalidates every key.
API_KEY_PEPPER = os.environ.get("API_KEY_PEPPER", "")
FAB_PASSWORD_COMPLEXITY_ENABLED = _bool("FAB_PASSWORD_COMPLEXITY_ENABLED", True)
# Failed logins (form and API together) counted per account and per client address in
# Redis: past the threshold, logins are refused for LOGIN_LOCKOUT_SECONDS, doubling with
# each further failure up to LOGIN_LOCKOUT_MAX_SECONDS (app/security/login_limits.py).
LOGIN_LIMITS_ENABLED = _bool("LOGIN_LIMITS_ENABLED", True)
LOGIN_MAX_FAILURES = _int("LOGIN_MAX_FAILURES", 5)
LOGIN_MAX_FAILURES_PER_ADDRESS = _int("LOGIN_MAX_FAILURES_PER_ADDRESS", 20)
LOGIN_LOCKOUT_SECONDS = _int("LOGIN_LOCKOUT_SECONDS", 30)
LOGIN_LOCKOUT_MAX_SECONDS = _int("LOGIN_LOCKOUT_MAX_SECONDS", 900)
LOGIN_FAILURE_WINDOW = _int("LOGIN_FAILURE_WINDOW", 3600)

# Sessions and forms
WTF_CSRF_ENABLED = _bool("WTF_CSRF_ENABLED", True)
WTF_CSRF_TIME_LIMIT = None
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", APG_ENV != "development")
JWT_ACCESS_TOKEN_EXPIRES = _int("JWT_ACCESS_TOKEN_EXPIRES", 900)
# Seconds a refresh token lives (flask-jwt-extended's default is 30 days). A password,
# role or activity change and a logout revoke it sooner (app/security/revocation.py).
JWT_REFRESH_TOKEN_EXPIRES = _int("JWT_REFRESH_TOKEN_EXPIRES", 86400)

# Request bodies over this size get 413 before any view runs.
MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1024 * 1024)

# Composition engine: capabilities named here are loaded along with those that
# installed packages declare in the `apg.capabilities` entry-point group.
APG_CAPABILITIES = _list("APG_CAPABILITIES", ["capability.blueprint:capability"])
APG_DISCOVER_ENTRY_POINTS = _bool("APG_DISCOVER_ENTRY_POINTS", True)

DEFAULT_TENANT = os.environ.get("DEFAULT_TENANT", "default")
ADMIN_USERNAME = os.environ.get("ADMIN_USERNAME", "admin")
ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD", "")
ADMIN_EMAIL = os.environ.get("ADMIN_EMAIL", "admin@example.com")

# Trust X-Forwarded-For from this many proxies when recording the client address.
PROXY_FIX_X_FOR = _int("PROXY_FIX_X_FOR", 0)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# A file for the web server's request lines (`flask --app app up`); empty: they are
# DEBUG lines of the `app.access` logger, shown only with LOG_LEVEL=DEBUG.
ACCESS_LOG = os.environ.get("ACCESS_LOG", "")
