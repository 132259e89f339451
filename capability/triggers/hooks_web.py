"""``POST /hooks/<token>``: a webhook's inbound URL. No session, no CSRF token, no
bearer token: the token in the path and the signature are the credentials
(``triggers.inbound`` decides everything; this adapts Flask's request)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from app.extensions import db
from capability.engine.dispatch import dispatcher_for
from capability.triggers import inbound

hooks = Blueprint("apg_hooks", __name__)


@hooks.route("/hooks/<token>", methods=["POST"])
def deliver(token: str) -> tuple[Response, int]:
    limits = inbound.Limits.from_config(current_app.config)
    length = request.content_length
    # A body announced over the limit is not read at all (413 without receiving it).
    body = b"" if length is not None and length > limits.max_bytes else request.get_data()
    delivery = inbound.Delivery(
        headers={k.lower(): v for k, v in request.headers.items()},
        query=request.args.to_dict(), body=body, content_type=request.content_type or "",
        ip=request.remote_addr, length=length)
    try:
        answer = inbound.receive(db.session, dispatcher_for(current_app), limits, token,
                                 delivery)
    finally:
        db.session.remove()
    return jsonify(answer.body), answer.status


def install(app: Flask) -> None:
    """The inbound URL takes no CSRF token (``reg.on_ready``, after CSRFProtect exists)."""
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(hooks)
