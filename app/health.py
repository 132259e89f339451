"""``GET /health``: database, Redis and the live RQ workers of every configured queue.

Anonymous callers (load balancers, probes) get the verdict only, ``{"status": "ok"}``
or ``{"status": "error"}`` with 503: what is down, which exception a driver raised and
how many workers run are for signed-in users (session or bearer token) only.

Workers are part of the verdict: once ``HEALTH_WORKER_GRACE`` seconds have passed since
the app started, a queue of ``RQ_QUEUES`` that no live worker listens on makes the
answer 503 (runs queued there would wait for ever). The grace covers a start, when
``up`` and the workers come up together.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from sqlalchemy import text

from app.extensions import db
from app.runtime.redis_conn import get_redis

bp = Blueprint("health", __name__)

STARTED_KEY = "apg_health_started"


@bp.record
def _remember_start(state: BlueprintSetupState) -> None:
    state.app.extensions.setdefault(STARTED_KEY, time.monotonic())


def _in_grace() -> bool:
    started = current_app.extensions.get(STARTED_KEY, 0.0)
    grace = float(current_app.config.get("HEALTH_WORKER_GRACE", 60))
    return time.monotonic() - started < grace


def checks() -> tuple[bool, dict[str, Any], list[str]]:
    """Whether all is well, the checks, and the configured queues no live worker serves."""
    result: dict[str, Any] = {}
    ok = True
    unserved: list[str] = []
    try:
        db.session.execute(text("SELECT 1"))
        result["database"] = "ok"
    except Exception as exc:
        db.session.rollback()
        ok = False
        result["database"] = f"error: {type(exc).__name__}"
    try:
        conn = get_redis(current_app)
        conn.ping()
        result["redis"] = "ok"
        from rq import Worker

        live = Worker.all(connection=conn)  # count() keeps dead workers
        result["workers"] = len(live)
        served = {name for worker in live for name in worker.queue_names()}
        unserved = [q for q in current_app.config["RQ_QUEUES"] if q not in served]
    except Exception as exc:
        ok = False
        result["redis"] = f"error: {type(exc).__name__}"
        result["workers"] = 0
    if unserved and not _in_grace():
        ok = False
    else:
        unserved = []
    return ok, result, unserved


def _signed_in() -> bool:
    from app.security.request import current_user_or_none

    try:
        return current_user_or_none() is not None
    except Exception:  # a broken session or database: no details, the verdict stands
        return False


@bp.get("/health")
def health() -> Any:
    ok, result, unserved = checks()
    status = "ok" if ok else "error"
    code = 200 if ok else 503
    if not _signed_in():
        return jsonify({"status": status}), code
    failing = [name for name, value in result.items() if isinstance(value, str) and value != "ok"]
    if unserved:
        failing.append("workers")
    body: dict[str, Any] = {"status": status, "checks": result}
    if failing:
        body["failing"] = failing
    if unserved:
        body["queues_without_workers"] = unserved
    return jsonify(body), code
