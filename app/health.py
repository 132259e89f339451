"""``GET /health``: database, Redis and the number of live RQ workers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from app.extensions import db
from app.runtime.redis_conn import get_redis

bp = Blueprint("health", __name__)


def checks() -> tuple[bool, dict[str, Any]]:
    result: dict[str, Any] = {}
    ok = True
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

        result["workers"] = len(Worker.all(connection=conn))  # count() keeps dead workers
    except Exception as exc:
        ok = False
        result["redis"] = f"error: {type(exc).__name__}"
        result["workers"] = 0
    return ok, result


@bp.get("/health")
def health() -> Any:
    ok, result = checks()
    status = "ok" if ok else "error"
    failing = [name for name, value in result.items() if isinstance(value, str) and value != "ok"]
    body: dict[str, Any] = {"status": status, "checks": result}
    if failing:
        body["failing"] = failing
    return jsonify(body), 200 if ok else 503
