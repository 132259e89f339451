"""What the log says: at INFO what an operator needs (start-up, logins, runs), no
warning at a start, request lines at DEBUG or in ACCESS_LOG; and the permission sync
that used to warn "Refused to delete permission view" at every start."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app import sync_security
from app.extensions import db
from tests.support.app import api_token, auth, unique
from tests.support.engine import drain
from tests.support.pages import make_workflow, start

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "Test-Pass-123!"
REQUEST_LINE = re.compile(r'"(GET|POST|PUT|DELETE|PATCH) /')


# -- in this process -------------------------------------------------------------------
def test_syncing_permissions_warns_about_nothing_and_keeps_shared_permissions(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    from app.security.sync import role_permissions

    with app.app_context():
        before = role_permissions(db.session)
        with caplog.at_level(logging.WARNING):
            sync_security(app)
            sync_security(app)
        after = role_permissions(db.session)
        db.session.remove()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], warnings
    assert after == before
    # "Runs" is shared by RunApi, RunView and FailedTaskView (only RunApi and RunView
    # control) and is a menu entry: every permission of the name is still there.
    admin = after["Admin"]
    assert {"can_read on Runs", "can_control on Runs", "menu_access on Runs"} <= admin, admin
    assert {"can_read on Runs", "can_control on Runs"} <= after["Operator"]


def test_starting_and_finishing_a_run_is_logged_once_committed(
    app: Flask, client: Any, factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    headers = auth(api_token(client, author["username"]))
    name = unique("logged")
    definition = {"name": name, "tasks": [{"id": "a", "type": "noop"},
                                          {"id": "b", "type": "fail", "depends_on": ["a"],
                                           "with": {"message": "it broke"}}]}
    r = client.post("/api/v1/workflows/", headers=headers,
                    json={"team": team["name"], "definition": definition})
    assert r.status_code == 201, r.get_json()
    workflow_id = r.get_json()["id"]
    with caplog.at_level(logging.INFO, logger="capability.runs"):
        run_id = start(client, headers, workflow_id)
        assert drain(app, run_id) == "failed"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if r.name == "capability.runs"]
    assert ("INFO", f"run {run_id} started: workflow {name!r} v1, api by "
                    f"{author['username']}") in lines, lines
    finished = [m for level, m in lines if m.startswith(f"run {run_id} finished")]
    assert len(finished) == 1, lines
    assert re.fullmatch(rf"run {run_id} finished: failed in [0-9.]+s "
                        rf"\(workflow {re.escape(repr(name))} v1\): task b: it broke",
                        finished[0]), finished
    assert ("WARNING", finished[0]) in lines


def test_a_start_that_rolls_back_logs_nothing(
    app: Flask, client: Any, factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The run lines follow the commit (the engine's outbox): a start rolled back is no
    news; the same start committed is."""
    from capability.engine import outbox, runner, state
    from capability.models import Run, Workflow, WorkflowVersion
    from tests.support.driver import Fifo

    team = factory.team()
    author = factory.user("Author", teams=[team])
    headers = auth(api_token(client, author["username"]))
    workflow_id = make_workflow(client, headers, team["name"], [{"id": "a", "type": "noop"}])

    def open_run() -> str:
        workflow = db.session.execute(
            select(Workflow).where(Workflow.id == workflow_id)).scalar_one()
        version = db.session.execute(select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id)).scalar_one()
        run = Run(workflow_id=workflow.id, version_id=version.id, workflow_version=1,
                  team_id=workflow.team_id, params={}, trigger="api",
                  created_by=author["username"])
        runner.open_run(db.session, run, state.definition_of(version), True)
        db.session.flush()
        return run.id

    with app.app_context(), caplog.at_level(logging.INFO, logger="capability.runs"):
        outbox.begin(db.session, Fifo())
        open_run()
        outbox.rollback(db.session)
        db.session.commit()  # a later commit of the same session does not log it either
        assert [r for r in caplog.records if r.name == "capability.runs"] == []
        outbox.begin(db.session, Fifo())
        run_id = open_run()
        outbox.commit(db.session)
        db.session.remove()
    lines = [r.getMessage() for r in caplog.records if r.name == "capability.runs"]
    assert lines == [f"run {run_id} started: workflow {workflow_name(app, workflow_id)!r} "
                     f"v1, api by {author['username']}"]


def workflow_name(app: Flask, workflow_id: str) -> str:
    from capability.models import Workflow

    with app.app_context():
        name = db.session.get(Workflow, workflow_id).name
        db.session.remove()
    return str(name)


def test_configure_refuses_an_unknown_level_and_an_access_log_it_cannot_write(
    tmp_path: Path,
) -> None:
    from app import logs

    with pytest.raises(ValueError, match="LOG_LEVEL must be DEBUG, INFO"):
        logs.configure("LOUD")
    missing = tmp_path / "nowhere" / "access.log"
    with pytest.raises(ValueError, match=f"the directory {tmp_path / 'nowhere'} does not"):
        logs.configure("INFO", str(missing))
    with pytest.raises(ValueError, match="is a directory"):
        logs.configure("INFO", str(tmp_path))
    try:
        logs.configure("INFO", str(tmp_path / "access.log"))
        logging.getLogger(logs.ACCESS_LOGGER).debug('10.0.0.1 "GET / HTTP/1.1" 200 -')
        assert '"GET / HTTP/1.1" 200' in (tmp_path / "access.log").read_text()
    finally:
        logs.configure("INFO")  # back to no file, for the tests that follow


# -- `flask --app app up`, as `make run` starts it --------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


class Up:
    """One `flask --app app up` on a free port; its output (stdout and stderr) in a file."""

    def __init__(self, instance: Path, **env: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.output = instance.parent / f"up-{self.port}.log"
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("DATABASE_URL", "REDIS_URL", "LOG_LEVEL", "ACCESS_LOG")}
        environ.update(APG_INSTANCE_DIR=str(instance), ADMIN_PASSWORD=ADMIN_PASSWORD,
                       APG_SHUTDOWN_GRACE="5", PYTHONUNBUFFERED="1", **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "up", "--port", str(self.port),
             "--workers", "1"],
            cwd=ROOT, env=environ, stdout=self.output.open("wb"), stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.output.read_text()

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.proc.poll() is None, self.text()
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not in the output:\n{self.text()}")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.returncode == 0, self.text()
        return self.text()


def _use(up: Up) -> None:
    """What a person does in a few minutes: pages, static files, the Socket.IO polls of a
    run page, API logins (one wrong), a workflow and a run on the worker."""
    for _ in range(10):
        for path in ("/login/", "/static/css/apg.css", "/socket.io/?EIO=4&transport=polling",
                     "/health"):
            urllib.request.urlopen(up.base + path, timeout=10).read()
    login = up.base + "/api/v1/security/login"
    assert _call(login, {"username": "admin", "password": "Wrong-Pass-123!"})[0] == 401
    status, body = _call(login, {"username": "admin", "password": ADMIN_PASSWORD})
    assert status == 200, body
    token = body["access_token"]
    _call(up.base + "/api/v1/teams/", {"name": "ops"}, token)
    status, body = _call(up.base + "/api/v1/workflows/", {"team": "ops", "definition": {
        "name": "logs-wf", "tasks": [{"id": "a", "type": "noop"}]}}, token)
    if status == 409:  # the second start: the workflow exists
        status, listed = _call(up.base + "/api/v1/workflows/", None, token)
        workflow_id = listed["ids"][0]
    else:
        assert status == 201, body
        workflow_id = body["id"]
    status, body = _call(f"{up.base}/api/v1/workflows/{workflow_id}/runs", {}, token)
    assert status == 201, body
    up.wait_for(rf"run {body['id']} finished: succeeded in [0-9.]+s \(workflow 'logs-wf' v1\)")


def _assert_operator_log(text: str, up: Up) -> None:
    assert "WARN" not in text, text  # Werkzeug's, FAB's "Refused to delete ..."
    assert "Refused to delete" not in text and "development server" not in text, text
    assert not REQUEST_LINE.search(text), text
    for expected in (
        rf"INFO app\.runtime\.up: APG Workflow Orchestration is up: {re.escape(up.base)}/ ",
        r"INFO app\.runtime\.worker: worker pid \d+ started, listening on queues high, "
        r"default, low",
        r"INFO app\.runtime\.worker: scheduler pid \d+ started",
        r"INFO app\.security\.manager: login refused: 'admin' from 127\.0\.0\.1 \(wrong password",
        r"INFO app\.security\.manager: login: admin from 127\.0\.0\.1",
        r"INFO capability\.runs: run \S+ started: workflow 'logs-wf' v1, api by admin",
        r"INFO app\.runtime\.up: stopped",
    ):
        assert re.search(expected, text), (expected, text)
    # 40 pages, files and polls and a run: a dozen or so lines, not hundreds (besides one
    # line per migration on a fresh database, which grows with the schema).
    lines = [line for line in text.splitlines() if "alembic.runtime.migration" not in line]
    assert len(lines) < 20, text


def test_up_logs_what_an_operator_needs_without_warnings_or_request_lines(tmp_path):
    instance = tmp_path / "instance"
    first = Up(instance)  # a fresh start: new database, permissions created
    try:
        first.wait_for(r"is up: ")
        _use(first)
    finally:
        text = first.stop()
    assert re.search(r"INFO alembic\.runtime\.migration: Running upgrade 0001 -> 0002", text)
    assert re.search(r"INFO app\.runtime\.up: created the Admin user 'admin'", text)
    _assert_operator_log(text, first)

    # A second start on the same database, with the request lines in ACCESS_LOG.
    access = tmp_path / "access.log"
    second = Up(instance, ACCESS_LOG=str(access))
    try:
        second.wait_for(r"is up: ")
        _use(second)
    finally:
        text = second.stop()
    _assert_operator_log(text, second)
    assert "Running upgrade" not in text and "created the Admin" not in text
    requests = access.read_text()
    assert re.search(r'^\S+ \S+ 127\.0\.0\.1 "GET /login/ HTTP/1\.1" 200', requests, re.M)
    assert '"GET /socket.io/?EIO=4&transport=polling HTTP/1.1" 200' in requests
    assert '"POST /api/v1/security/login HTTP/1.1" 401' in requests
    assert len(REQUEST_LINE.findall(requests)) >= 40


def test_debug_shows_the_request_lines_on_the_console(tmp_path):
    up = Up(tmp_path / "instance", LOG_LEVEL="DEBUG")
    try:
        up.wait_for(r"is up: ")
        urllib.request.urlopen(up.base + "/login/", timeout=10).read()
        up.wait_for(r'DEBUG app\.access: 127\.0\.0\.1 "GET /login/ HTTP/1\.1" 200')
    finally:
        up.stop()
