"""Drive a run in the test process without RQ: every ``Send`` goes to a FIFO, and each
step runs the next attempt the way a worker does (``jobs.run_one``); plus counting the
SQL statements of a block and a short way to write tasks."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from app.extensions import db
from app.security.actor import SYSTEM
from capability.engine import jobs, outbox
from capability.engine.dispatch import Dispatcher, Send
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext, Outcome
from capability.models import Run, TaskKind, TaskRun
from capability.runs import service as runs
from tests.support.app import unique

SETTINGS = EngineSettings(python_prefixes=("tests.support.callables",))


class Fifo(Dispatcher):
    """A dispatcher that keeps what is sent, in order, instead of enqueueing on RQ."""

    def __init__(self, settings: EngineSettings = SETTINGS) -> None:
        super().__init__(conn=None, settings=settings)  # type: ignore[arg-type]
        self.items: collections.deque[Send] = collections.deque()
        self.published: list[str] = []

    def send(self, items: list[Send]) -> None:
        self.items.extend(items)

    def stop(self, attempt_ids: list[str]) -> None:
        pass

    def publish(self, run_ids: list[str]) -> None:
        self.published.extend(run_ids)


@contextmanager
def unit(session: Any, fifo: Fifo) -> Iterator[outbox.Outbox]:
    """One engine transaction, owned here as ``jobs`` owns one: committed at the end of
    the block (its sends go to ``fifo``), rolled back on an exception."""
    box = outbox.begin(session, fifo)
    try:
        yield box
    except BaseException:
        outbox.rollback(session)
        raise
    outbox.commit(session)


class Driver:
    """A workflow of ``tasks`` made by ``op``'s Author, started by the system; ``op["path"]``
    says how instant types run: ``instant`` (their own path, as workers do) or
    ``general`` (begin, execute, record)."""

    def __init__(self, app: Flask, client: FlaskClient, op: dict[str, Any],
                 tasks: list[dict[str, Any]], **extra: Any) -> None:
        definition = {"name": unique("inc"), "tasks": tasks, **extra}
        r = client.post("/api/v1/workflows/", headers=op["h"],
                        json={"team": op["team"]["name"], "definition": definition})
        assert r.status_code == 201, r.get_json()
        self.app, self.fifo, self.path = app, Fifo(), op["path"]
        self.scopes: dict[str, dict[str, Any]] = {}
        with app.app_context():
            run, _ = runs.start_run(db.session, SYSTEM, self.fifo, r.get_json()["id"])
            self.run_id = run.id
            db.session.remove()

    def step(self) -> str | None:
        """Run the next sent attempt as a worker would; the task id it ran."""
        send = self.fifo.items.popleft()
        assert send.child_run is None and not send.finish_delay
        ran: list[AttemptContext] = []

        def execute(ctx: AttemptContext) -> Outcome:
            ran.append(ctx)
            return jobs.execute(ctx, self.fifo.settings)

        with self.app.app_context():
            box = jobs.run_one(db.session, self.fifo, send.attempt_id,
                               send.instant and self.path == "instant", "test", execute)
            if box is not None:
                box.deliver()
            db.session.remove()
        if not ran:
            return None
        self.scopes[ran[0].task.id] = ran[0].scope
        return ran[0].task.id

    def drain(self) -> str:
        while self.fifo.items:
            self.step()
        return self.status()

    def status(self) -> str:
        with self.app.app_context():
            run = db.session.get(Run, self.run_id)
            assert run is not None
            status = run.status
            db.session.remove()
        return str(status)

    def tasks(self) -> dict[str, TaskRun]:
        with self.app.app_context():
            rows = db.session.execute(select(TaskRun).where(
                TaskRun.run_id == self.run_id, TaskRun.kind == TaskKind.TASK)).scalars().all()
            db.session.expunge_all()
            db.session.remove()
        return {t.task_id: t for t in rows}


@contextmanager
def executed(app: Flask, record: Callable[..., None]) -> Iterator[None]:
    """``record(conn, cursor, statement, ...)`` called before each statement the app's
    engine runs while the block runs."""
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    """The SQL statements run while the block runs (commits are not statements, nor is
    the preparing of a statement on a new connection: ``engine.prepared``, once per
    connection, whichever test happens to be the first to use it)."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("PREPARE "):
            seen.append(statement)

    with executed(app, count):
        yield seen


def noop(task_id: str, *deps: str, kind: str = "noop", **extra: Any) -> dict[str, Any]:
    if "with_" in extra:
        extra["with"] = extra.pop("with_")
    return {"id": task_id, "type": kind, **({"depends_on": list(deps)} if deps else {}),
            **extra}


def fail(task_id: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return noop(task_id, *deps, kind="fail", with_={"message": "boom"}, **extra)
