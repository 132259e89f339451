"""Live run updates over Socket.IO: every browser watching a run sees it change.

Every transaction that changes a run ends with its outbox telling the run's watchers
(``engine.outbox``, through the publisher ``capability.blueprint`` registers): the run's state
(statuses, times, why a task did not run, which controls it allows now; no outputs,
errors or params) goes to the room ``run:<id>`` of the namespace ``/runs`` through the
Socket.IO message queue (Redis), so every web process delivers it to the browsers
watching that run, wherever the change happened (a worker, another web process).
Publishing never raises: a lost update costs a browser one refresh, a raised one would
fail the task that made it.

Browsers join a run's room through the namespace in ``capability.live_web`` (web role
only). Workers publish through ``publish_run_soon`` (coalesced, off the hot path) and
``QueueEmitter`` (no python-socketio in a worker).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from app.extensions import DbSession, db
from app.times import iso

log = logging.getLogger(__name__)

NAMESPACE = "/runs"
EVENT = "run"

_emitters: dict[str, Any] = {}
_emitters_lock = threading.Lock()


def room(run_id: str) -> str:
    return f"run:{run_id}"


def publish(app: Flask, run_id: str, coalesce: bool) -> None:
    """Tell a run's watchers: coalesced (a worker's hot path) or at once."""
    (publish_run_soon if coalesce else publish_run)(app, run_id)


def run_state(session: DbSession, run: Any, reads: list[Any] | None = None) -> dict[str, Any]:
    """What a watcher may see of a run: statuses, attempt numbers, workers and times,
    why a task did not run, and the controls the run allows now (``controls``, without
    who the watcher is: the page shows a control only to those who may use it).

    Four statements whatever the size of the run (``engine.snapshot``: tasks, a page of
    elements, element counts, a page of attempts; a fifth for a queued run), so a
    publish after each step of a large run stays cheap. Each task carries the first
    ``snapshot.PAGE`` elements and attempts with their totals (``items_total``,
    ``item_counts``, ``attempt_history_total``): a 5,000-element task's state is no
    longer every element twice a second. ``reads``: the run's tasks already read in
    full (``runs.read_run``: the run's page), so not read again."""
    state: dict[str, Any] = _state(session, run, raw=False, reads=reads)
    return state


class RawJSON(str):
    """A JSON document already serialised (``QueueEmitter`` embeds it as it is)."""


def run_state_json(session: DbSession, run: Any) -> RawJSON:
    """``run_state`` serialised, built task by task: a 1,000-task run's state as one
    dict, then one ``json.dumps``, peaked at ~4 MB of short-lived objects in a worker
    twice a second during its fan-out (memory the worker then kept); this peaks at a
    third of that."""
    state: RawJSON = _state(session, run, raw=True)
    return state


def _state(session: DbSession, run: Any, raw: bool, reads: list[Any] | None = None) -> Any:
    # On first use: the scheduler registers the publisher but never publishes, and loads
    # no engine (tests/integration/test_worker_role.py).
    from capability.engine import snapshot
    from capability.engine import state as engine_state
    from capability.engine.decide import controls_over
    from capability.models import TaskKind

    encode: Any = json.dumps if raw else (lambda value: value)
    if reads is None:
        reads = snapshot.read(session, run.id, full=False, elements=engine_state.plan_for(
            session, run).has_elements)

    def state(t: snapshot.TaskRead) -> Any:
        row = t.row
        own = {"task_id": row.task_id, "status": row.status, "attempts": row.attempts,
               "reason": row.reason, "started_at": iso(row.started_at),
               "finished_at": iso(row.finished_at), "items_total": t.items_total,
               "item_counts": t.item_counts, "attempt_history_total": t.attempts_total}
        items = [encode({"index": i.index, "status": i.status}) for i in t.items]
        attempts = [encode({
            "number": a.number, "status": a.status, "worker": a.worker,
            "started_at": iso(a.started_at), "finished_at": iso(a.finished_at),
            "item": a.item,
        }) for a in t.attempts]
        if not raw:
            return {**own, "items": items, "attempt_history": attempts}
        return (json.dumps(own)[:-1] + ', "items": [' + ", ".join(items)
                + '], "attempt_history": [' + ", ".join(attempts) + "]}")

    rule = controls_over(run.status, ((t.row.kind, t.row.status) for t in reads),
                         lambda: engine_state.admitted(session, run.id))
    head = {"id": run.id, "status": run.status, "created_at": iso(run.created_at),
            "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
            "controls": list(rule.allowed), "retry_blocked": rule.retry_blocked}
    ran = [state(t) for t in reads if t.row.kind == TaskKind.TASK]
    # The undo steps that ran because the run failed, in the order they ran.
    undone = [state(t) for t in reads if t.row.kind == TaskKind.COMPENSATION]
    if not raw:
        return {**head, "tasks": ran, "compensations": undone}
    return RawJSON(json.dumps(head)[:-1] + ', "tasks": [' + ", ".join(ran)
                   + '], "compensations": [' + ", ".join(undone) + "]}")


@contextmanager
def _context(app: Flask) -> Iterator[None]:
    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        yield
        return
    with app.app_context():
        yield


# Flask-SocketIO's message-queue channel, and the message python-socketio's
# PubSubManager.emit publishes there (JSON): every web process's listener hands it to
# the clients in the room. Workers publish it themselves, so they never load
# python-socketio, Engine.IO and requests (about 9 MB each); tests/integration
# test_live.py checks a browser-side client receives it through a web process.
CHANNEL = "flask-socketio"


class QueueEmitter:
    """Write-only: publishes Socket.IO emits on the message queue (Redis)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.host_id = uuid.uuid4().hex

    def emit(self, event: str, data: Any, namespace: str = "/", to: str | None = None) -> None:
        message = json.dumps({
            "method": "emit", "event": event, "data": [None], "binary": False,
            "namespace": namespace, "room": to, "skip_sid": None, "callback": None,
            "host_id": self.host_id,
        })
        if isinstance(data, RawJSON):  # embedded as it is, not parsed and dumped again
            message = message.replace('"data": [null]', f'"data": [{data}]', 1)
        else:
            message = message.replace('"data": [null]', f'"data": [{json.dumps(data)}]', 1)
        self.conn.publish(CHANNEL, message)


def _emitter(app: Flask) -> Any:
    """The app's Socket.IO server (it publishes to the message queue) or, where none was
    set up (workers), a ``QueueEmitter`` on ``REDIS_URL``, one per process."""
    own = app.extensions.get("socketio")
    if own is not None and getattr(own, "server", None) is not None:
        return own
    from app.runtime.redis_conn import get_redis

    url = app.config["REDIS_URL"]
    with _emitters_lock:
        if url not in _emitters:
            _emitters[url] = QueueEmitter(get_redis(app))
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
                # The run's own row only: not the workflow and team it joins by default.
                run = session.execute(
                    select(Run).options(lazyload("*")).where(Run.id == run_id)).scalar()
                if run is None:
                    return
                emitter = _emitter(app)
                raw = isinstance(emitter, QueueEmitter)
                state = run_state_json(session, run) if raw else run_state(session, run)
            emitter.emit(EVENT, state, namespace=NAMESPACE, to=room(run_id))
    except Exception:
        log.warning("could not publish the state of run %s", run_id, exc_info=True)


# Workers publish through a per-process flusher instead of on the hot path: a hop
# marks its run dirty and goes on; the flusher sends each dirty run's state at most
# every MIN_INTERVAL seconds (a 1,000-task fan-out is a few full states a second, not
# two per task), after a WINDOW that gathers a burst. Watchers still see every change
# within a second, and always the final state.
WINDOW = 0.05
MIN_INTERVAL = 0.5


class _Flusher:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pending: dict[str, None] = {}  # ordered: first dirtied, first sent
        self.last: dict[str, float] = {}
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, run_id: str) -> None:
        with self.cond:
            self.pending[run_id] = None
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="apg-live",
                                               daemon=True)
                self.thread.start()
            self.cond.notify()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
            time.sleep(WINDOW)
            now = time.monotonic()
            with self.cond:
                due = [r for r in self.pending if now - self.last.get(r, 0.0) >= MIN_INTERVAL]
                for run_id in due:
                    del self.pending[run_id]
                    self.last[run_id] = now
                if len(self.last) > 1000:  # forget runs not published for a while
                    self.last = {r: t for r, t in self.last.items() if now - t < MIN_INTERVAL}
                wait = 0.0 if due else MIN_INTERVAL - min(
                    now - self.last.get(r, 0.0) for r in self.pending)
            for run_id in due:
                if _claim(self.app, run_id):
                    publish_run(self.app, run_id)
                else:  # another worker sent it a moment ago: this change goes out next time
                    with self.cond:
                        self.pending.setdefault(run_id, None)
            if wait > 0:
                time.sleep(wait)


def _claim(app: Flask, run_id: str) -> bool:
    """Whether this process sends the run's state now. One process per ``MIN_INTERVAL``
    does (a Redis key that expires): two workers busy on one run would otherwise both
    send its whole state twice a second. A change committed after the holder read the
    state is still sent: its worker keeps it pending and tries again after the interval.
    On any error: send."""
    try:
        from app.runtime.redis_conn import get_redis

        return bool(get_redis(app).set(f"apg:live:sent:{run_id}", b"1",
                                       px=int(MIN_INTERVAL * 1000), nx=True))
    except Exception:
        return True


_flushers: weakref.WeakKeyDictionary[Flask, _Flusher] = weakref.WeakKeyDictionary()


def publish_run_soon(app: Flask, run_id: str) -> None:
    """``publish_run`` off the caller's thread, coalesced (see ``_Flusher``). For the
    workers' hot path; requests publish at once. Never raises."""
    if not app.config.get("APG_LIVE_UPDATES", True):
        return
    try:
        with _emitters_lock:
            flusher = _flushers.get(app)
            if flusher is None:
                flusher = _flushers[app] = _Flusher(app)
        flusher.add(run_id)
    except Exception:
        log.warning("could not queue the state of run %s", run_id, exc_info=True)


def publish_attempt(app: Flask, attempt_id: str) -> None:
    """``publish_run`` for the run of a task attempt. Never raises."""
    try:
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
