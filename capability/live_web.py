"""The web side of live run updates: the Socket.IO namespace ``/runs``.

A browser joins a room with ``join {run_id}``; the web process checks that the
signed-in user may read the run (team scope, as ``GET /api/v1/runs/<id>``) before it
lets it in. The same check runs again before every delivery to a run's room
(``MembersRechecked``): a user removed from the team, deactivated or stripped of the
role since joining leaves the room and receives nothing more. It runs in each web
process for its own sockets, when the message arrives, so it holds wherever the
membership changed and wherever the update was published. Only the web role imports
this (python-socketio): workers publish through ``capability.live``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import socketio as pysocketio
from flask import Flask, current_app, g

from app.errors import NotFound
from app.extensions import db, socketio
from capability.live import NAMESPACE, room, run_state

RUN_ROOM_PREFIX = room("")

log = logging.getLogger(__name__)


class RunsNamespace(pysocketio.Namespace):
    """``/runs``: a signed-in user joins the room of a run they may read.

    One instance serves every Socket.IO server of the process (tests build several
    apps); each event is answered by the server that holds the client's session.
    """

    def __init__(self) -> None:
        super().__init__(NAMESPACE)
        self._servers: weakref.WeakSet[Any] = weakref.WeakSet()

    def _set_server(self, server: Any) -> None:
        super()._set_server(server)
        self._servers.add(server)
        _recheck_members(server)

    def _server_of(self, sid: str) -> tuple[Any, dict[str, Any]] | None:
        for server in list(self._servers):
            environ = server.get_environ(sid, namespace=NAMESPACE)
            if environ is not None:
                return server, environ
        return None

    @staticmethod
    def _user(environ: dict[str, Any]) -> Any:
        from flask_login import current_user

        user = current_user._get_current_object()  # type: ignore[attr-defined]
        return user if getattr(user, "is_authenticated", False) else None

    def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        app = environ.get("flask.app")
        if app is None:
            return False
        with app.request_context(environ):
            return self._user(environ) is not None

    def on_join(self, sid: str, data: Any) -> dict[str, Any]:
        found = self._server_of(sid)
        run_id = data.get("run_id") if isinstance(data, dict) else None
        if found is None or not isinstance(run_id, str):
            return {"ok": False, "error": "send {run_id}"}
        server, environ = found
        with environ["flask.app"].request_context(environ):
            state = _readable_state(self._user(environ), run_id)
        if state is None:
            log.info("socket %s refused the room of run %s", sid, run_id)
            return {"ok": False, "error": "not found"}
        server.enter_room(sid, room(run_id), namespace=NAMESPACE)
        return {"ok": True, "run": state}

    def on_leave(self, sid: str, data: Any) -> None:
        found = self._server_of(sid)
        run_id = data.get("run_id") if isinstance(data, dict) else None
        if found is not None and isinstance(run_id, str):
            found[0].leave_room(sid, room(run_id), namespace=NAMESPACE)


def _readable_run(user: Any, run_id: str) -> Any | None:
    """The run when ``user`` may read it (the Runs read permission and its team), in
    ``db.session`` (the caller removes it)."""
    from app.security.request import actor_for_user
    from capability.runs import service as runs

    if user is None:
        return None
    sm = current_app.extensions["appbuilder"].sm
    g.user = user  # what FAB's permission check reads
    if not sm.has_access("can_read", "Runs"):
        return None
    try:
        return runs.get_run(db.session, actor_for_user(db.session, user), run_id)
    except NotFound:
        return None


def _readable_state(user: Any, run_id: str) -> dict[str, Any] | None:
    """The run's state when ``user`` may read it."""
    try:
        run = _readable_run(user, run_id)
        return None if run is None else run_state(db.session, run)
    finally:
        db.session.remove()


def _may_still_read(server: Any, sid: str, run_id: str) -> bool:
    """Whether the user of socket ``sid`` may read the run now (the join's check)."""
    environ = server.get_environ(sid, namespace=NAMESPACE)
    if environ is None:
        return False
    app = environ["flask.app"]
    # An app context of its own: the check's session is not that of a request which
    # is publishing in this thread.
    with app.app_context(), app.request_context(environ):
        try:
            return _readable_run(RunsNamespace._user(environ), run_id) is not None
        finally:
            db.session.remove()


def _recheck_members(server: Any) -> None:
    """Deliver through ``MembersRechecked``. The manager was built by Flask-SocketIO
    (its class depends on the message queue's URL): the mixin goes on whichever it is."""
    manager = getattr(server, "manager", None)
    if manager is not None and not isinstance(manager, MembersRechecked):
        cls = type(manager)
        manager.__class__ = type(f"MembersRechecked{cls.__name__}", (MembersRechecked, cls), {})


class MembersRechecked:
    """Mixed into the Socket.IO server's client manager (whatever message-queue class
    Flask-SocketIO chose): before a run's state goes to this process's sockets in its
    room, each socket's user is checked again; one that may no longer read the run
    leaves the room, one whose check fails (database down) misses this update only."""

    server: Any

    def _handle_emit(self, message: dict[str, Any]) -> None:
        target = message.get("room")
        if message.get("namespace") == NAMESPACE and isinstance(target, str) \
                and target.startswith(RUN_ROOM_PREFIX):
            skip = message.get("skip_sid") or []
            skip = list(skip) if isinstance(skip, list) else [skip]
            run_id = target[len(RUN_ROOM_PREFIX):]
            for sid, _eio_sid in list(self.get_participants(NAMESPACE, target)):  # type: ignore[attr-defined]
                try:
                    allowed = _may_still_read(self.server, sid, run_id)
                except Exception:
                    log.warning("could not check socket %s for run %s", sid, run_id,
                                exc_info=True)
                    skip.append(sid)
                    continue
                if not allowed:
                    log.info("socket %s left the room of run %s: may no longer read it",
                             sid, run_id)
                    self.leave_room(sid, NAMESPACE, target)  # type: ignore[attr-defined]
            message = {**message, "skip_sid": skip}
        super()._handle_emit(message)  # type: ignore[misc]


_namespace = RunsNamespace()


def install(app: Flask) -> None:
    """Serve ``/runs`` on this app's Socket.IO server (and on every later one)."""
    if _namespace not in socketio.namespace_handlers:
        socketio.namespace_handlers.append(_namespace)
    server = socketio.server
    if server is not None and server.namespace_handlers.get(NAMESPACE) is not _namespace:
        server.register_namespace(_namespace)

