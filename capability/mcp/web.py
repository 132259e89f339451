"""``/mcp``: the MCP server over streamable HTTP, served by the web process itself.

The SDK's HTTP transport is ASGI; the app is WSGI (Werkzeug's threaded server under
``flask --app app up``, any WSGI server otherwise). So the transport runs on one event
loop in a background thread of the web process, started on the first ``/mcp`` request,
and each request reaches it through a2wsgi's ``ASGIMiddleware`` from the Flask view.
The transport is stateless with JSON answers: every POST is answered on its own, so any
web process (or thread) can take any request and nothing is kept between requests.

The view checks the key first, on every request (a revoked key is refused on the next
call): 401 ``{"message": reason}`` without saying which keys exist, 429 with
``Retry-After`` over the key's rate limit, the ``X-RateLimit-*`` headers on every keyed
answer. The acting user (narrowed by the key) travels to the tool in the WSGI environ.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from io import BytesIO
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.test import run_wsgi_app

from app.extensions import db
from app.security import api_keys
from app.security.actor import Actor
from app.security.api_keys_web import record_refusal
from app.security.request import client_ip, request_id

mcp_web = Blueprint("apg_mcp", __name__)

EXTENSION = "apg_mcp"
ACTOR = "apg.mcp.actor"  # the environ key (no client can set a key without HTTP_)
STARTUP_SECONDS = 10.0
# capability.mcp.server's codes (not imported: the SDK loads on the first /mcp request).
NOT_ALLOWED, RETRY_LATER = -32003, -32000


class Bridge:
    """The SDK's session manager running on its own event loop thread, as WSGI."""

    def __init__(self, app: Flask) -> None:
        from a2wsgi import ASGIMiddleware
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        from capability.mcp import server

        self.manager = StreamableHTTPSessionManager(
            app=server.build(app, _from_environ), json_response=True, stateless=True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="apg-mcp",
                                       daemon=True)
        self.thread.start()
        started: Future[None] = Future()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(started), self.loop)
        started.result(STARTUP_SECONDS)
        self.wsgi = ASGIMiddleware(self.manager.handle_request,  # type: ignore[arg-type]
                                   loop=self.loop)

    async def _serve(self, started: Future[None]) -> None:
        # The manager's task group lives as long as the process: stateless requests
        # run in it.
        async with self.manager.run():
            started.set_result(None)
            await asyncio.Event().wait()


_lock = threading.Lock()


def bridge(app: Flask) -> Bridge:
    found = app.extensions.get(EXTENSION)
    if found is None:
        with _lock:
            found = app.extensions.get(EXTENSION)
            if found is None:
                found = app.extensions[EXTENSION] = Bridge(app)
    return found  # type: ignore[no-any-return]


def _from_environ(http_request: Any) -> Actor:
    actor = None if http_request is None else http_request.scope["wsgi_environ"].get(ACTOR)
    if not isinstance(actor, Actor):  # never: the view always sets it
        from capability.mcp.server import Refused

        raise Refused("no API key")
    return actor


def _refused(status: int, message: str, **headers: str) -> Response:
    """The refusal as a REST client reads it (``message``) and as an MCP client does
    (a JSON-RPC error, which the SDK's client surfaces with this reason)."""
    code = NOT_ALLOWED if status == 401 else RETRY_LATER
    response = jsonify({"message": message, "jsonrpc": "2.0", "id": None,
                        "error": {"code": code, "message": message,
                                  "data": {"http_status": status}}})
    response.status_code = status
    response.headers.update(headers)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mcp"'
    return response


def _denied(exc: api_keys.KeyRefused) -> Response:
    """401, recorded as the REST API records it."""
    record_refusal(exc)
    return _refused(401, exc.reason)


@mcp_web.route("/mcp", methods=["GET", "POST", "DELETE"])
def endpoint() -> Response:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _refused(401, "An API key is required: Authorization: Bearer apk_...")
    ip = client_ip()
    try:
        use = api_keys.authenticate(db.session, token.strip(), ip)
        state = api_keys.check_rate(use)
        actor = api_keys.actor_for(db.session, use, ip, request_id())
    except api_keys.KeyRefused as exc:
        return _denied(exc)
    except api_keys.RateLimited as exc:
        g.apg_audited = True  # a flood of 429s is logged, not a trail of events
        return _refused(429, f"Rate limit of this API key exceeded; retry in "
                             f"{exc.retry_after} s",
                        **exc.state.headers(), **{"Retry-After": str(exc.retry_after)})
    finally:
        db.session.remove()  # the tool runs on another thread, with its own session
    body = request.get_data(cache=True)
    environ = dict(request.environ)
    environ.update({ACTOR: actor, "wsgi.input": BytesIO(body),
                    "CONTENT_LENGTH": str(len(body))})
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    chunks, status, headers = run_wsgi_app(bridge(app).wsgi,  # type: ignore[arg-type]
                                           environ, buffered=True)
    response = Response(chunks, status=status, headers=headers)
    response.headers.update(state.headers())
    return response


def install(app: Flask) -> None:
    """``/mcp`` takes no CSRF token: it reads no session, only the key (``on_ready``)."""
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(mcp_web)
