"""Request-level audit: denied requests, rejected input, and the request id."""

from __future__ import annotations

from flask import Flask, Response, g, request

from app.audit.context import current_actor
from app.audit.recorder import build_event, record
from app.errors import printable
from app.extensions import db
from app.security.request import request_id

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Rejected input from a person: the request changed nothing, but the attempt is kept.
ERROR_STATUSES = frozenset({400, 404, 409, 413, 422})
# Login outcomes are recorded by the security manager with the username tried.
SKIP_ERROR_ENDPOINTS = frozenset({"ApgSecurityApi.login", "AuthDBView.login"})


def mark_audited() -> None:
    """Tell the request hook that the handler already recorded this request's outcome."""
    g.apg_audited = True


def _record_request(outcome: str, status: int) -> None:
    actor = current_actor()
    db.session.rollback()  # whatever the refused request staged must not be committed
    record(
        db.session,
        build_event(
            actor,
            "access" if outcome == "denied" else request.method.lower(),
            "endpoint",
            printable(request.path),  # a NUL in the URL cannot be stored in PostgreSQL
            outcome=outcome,
            after={"method": request.method, "endpoint": request.endpoint, "status": status},
        ),
    )
    db.session.commit()


def _after_request(response: Response) -> Response:
    response.headers.setdefault("X-Request-ID", request_id())
    if getattr(g, "apg_audited", False):
        return response
    status = response.status_code
    try:
        if status == 403:
            _record_request("denied", status)
        elif (
            status in ERROR_STATUSES
            and request.method in MUTATING
            and request.endpoint not in SKIP_ERROR_ENDPOINTS
            # Anonymous probes of URLs that do not exist are noise, not a person's act.
            and not (status == 404 and current_actor().user_id is None)
        ):
            _record_request("error", status)
    finally:
        g.apg_audited = True
    return response


def _assign_request_id() -> None:
    request_id()


def init_app(app: Flask) -> None:
    app.before_request(_assign_request_id)
    app.after_request(_after_request)
