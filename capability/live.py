"""Live run updates over Socket.IO (DESIGN.md, "Data flow of a run", step 4).

Whoever commits a change to a run calls ``publish_run(app, run_id)``: the run's state
(statuses and times only: no outputs, errors or params) goes to the room
``run:<id>`` of the namespace ``/runs`` through the Socket.IO message queue (Redis),
so every web process delivers it to the browsers watching that run, wherever the
change happened (a worker, another web process). Publishing never raises: a lost
update costs a browser one refresh, a raised one would fail the task that made it.

A browser joins a room with ``join {run_id}``; the web process checks that the signed-in
user may read the run (team scope, as ``GET /api/v1/runs/<id>``) before it lets it in.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import socketio as pysocketio
from flask import Flask, current_app, g, has_app_context
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.extensions import db, socketio

log = logging.getLogger(__name__)

NAMESPACE = "/runs"
EVENT = "run"
RUN_KEYS = ("id", "status", "created_at", "started_at", "finished_at")
TASK_KEYS = ("task_id", "status", "attempts", "started_at", "finished_at")
ATTEMPT_KEYS = ("number", "status", "worker", "started_at", "finished_at")

_emitters: dict[str, Any] = {}
_emitters_lock = threading.Lock()


def room(run_id: str) -> str:
    return f"run:{run_id}"


def run_state(session: Any, run: Any) -> dict[str, Any]:
    """What a watcher may see of a run: statuses, attempt numbers, workers and times."""
    from capability import runs

    full = runs.run_dict(session, run)
    return {
        **{k: full[k] for k in RUN_KEYS},
        "tasks": [_task_state(t) for t in full["tasks"]],
        "compensations": [_task_state(t) for t in full.get("compensations", [])],
    }


def _task_state(task: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: task[k] for k in TASK_KEYS},
        "items": [{"index": i["index"], "status": i["status"]} for i in task.get("items", [])],
        "attempt_history": [
            {**{k: a.get(k) for k in ATTEMPT_KEYS}, "item": a.get("item")}
            for a in task["attempt_history"]
        ],
    }


@contextmanager
def _context(app: Flask) -> Iterator[None]:
    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        yield
        return
    with app.app_context():
        yield


def _emitter(app: Flask) -> Any:
    """The app's Socket.IO server (it publishes to the message queue) or, where none was
    set up, a write-only emitter on ``REDIS_URL``, one per process."""
    own = app.extensions.get("socketio")
    if own is not None and getattr(own, "server", None) is not None:
        return own
    url = app.config["REDIS_URL"]
    with _emitters_lock:
        if url not in _emitters:
            from flask_socketio import SocketIO

            _emitters[url] = SocketIO(message_queue=url)
        return _emitters[url]


def publish_run(app: Flask, run_id: str) -> None:
    """Send the run's current state to its watchers. Never raises."""
    try:
        if not app.config.get("APG_LIVE_UPDATES", True):
            return
        from capability.models import Run

        with _context(app):
            # A session of its own: the caller's (a request's) is left as it was.
            with Session(db.engine) as session:
                run = session.get(Run, run_id)
                if run is None:
                    return
                state = run_state(session, run)
            _emitter(app).emit(EVENT, state, namespace=NAMESPACE, to=room(run_id))
    except Exception:
        log.warning("could not publish the state of run %s", run_id, exc_info=True)


def publish_attempt(app: Flask, attempt_id: str) -> None:
    """``publish_run`` for the run of a task attempt. Never raises."""
    try:
        from sqlalchemy import select

        from capability.models import TaskAttempt, TaskRun

        with _context(app), Session(db.engine) as session:
            run_id = session.execute(
                select(TaskRun.run_id).join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
                .where(TaskAttempt.id == attempt_id)
            ).scalar()
    except Exception:
        log.warning("could not find the run of attempt %s", attempt_id, exc_info=True)
        return
    if run_id is not None:
        publish_run(app, run_id)


# -- the web side: who may watch ------------------------------------------------------
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


def _readable_state(user: Any, run_id: str) -> dict[str, Any] | None:
    """The run's state when ``user`` may read it (the Runs read permission and its team)."""
    from app.security.actor import actor_for_user
    from capability import runs

    if user is None:
        return None
    sm = current_app.extensions["appbuilder"].sm
    g.user = user  # what FAB's permission check reads
    try:
        if not sm.has_access("can_read", "Runs"):
            return None
        actor = actor_for_user(db.session, user)
        return run_state(db.session, runs.get_run(db.session, actor, run_id))
    except NotFound:
        return None
    finally:
        db.session.remove()


_namespace = RunsNamespace()


def install(app: Flask) -> None:
    """Serve ``/runs`` on this app's Socket.IO server (and on every later one)."""
    if _namespace not in socketio.namespace_handlers:
        socketio.namespace_handlers.append(_namespace)
    server = socketio.server
    if server is not None and server.namespace_handlers.get(NAMESPACE) is not _namespace:
        server.register_namespace(_namespace)
