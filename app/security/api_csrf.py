"""CSRF for API mutations authenticated by the session cookie.

FAB's REST APIs exempt themselves from Flask-WTF's CSRF check (they expect a Bearer
token), but the ones with ``allow_browser_login`` also accept the UI's session cookie,
which a browser sends along with a form another site submits. So a POST, PUT, PATCH or
DELETE under ``/api/`` from a logged-in browser must carry the page's CSRF token in the
``X-CSRFToken`` header (or ``X-CSRF-Token``), which a cross-site form cannot set. A call
with an ``Authorization`` header (Bearer token, API key) is not a browser's ambient
credential and is unaffected, as is the API login, which reads no session.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify, request, session
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms.validators import ValidationError

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADERS = ("X-CSRFToken", "X-CSRF-Token")
# Endpoints that read no session, so a forged request gains nothing.
EXEMPT_ENDPOINTS = frozenset({"ApgSecurityApi.login"})


def _needs_token() -> bool:
    return (
        request.method in MUTATING
        and request.path.startswith("/api/")
        and bool(current_app.config.get("WTF_CSRF_ENABLED", True))
        and not request.headers.get("Authorization")
        and session.get("_user_id") is not None
        and request.endpoint not in EXEMPT_ENDPOINTS
    )


def _check() -> Any:
    if not _needs_token():
        return None
    token = next((request.headers[h] for h in HEADERS if request.headers.get(h)), None)
    try:
        validate_csrf(token)
    except (ValidationError, CSRFError) as exc:
        reason = exc.args[0] if exc.args else "invalid"
        return jsonify({"message": (
            f"CSRF check failed ({reason}): an API call authenticated by the session "
            "cookie must send the page's CSRF token in the X-CSRFToken header, or use a "
            "Bearer token"
        )}), 403
    return None


def init_app(app: Flask) -> None:
    app.before_request(_check)
