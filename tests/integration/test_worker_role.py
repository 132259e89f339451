"""The worker process role (APG_PROCESS=worker): what RQ workers, the scheduler and
`audit verify` load, their CLI, and a workflow run end to end through worker-role
processes (`python -m app worker|scheduler`, as `flask --app app up` starts them),
with its live updates published on the Redis message queue and the audit chain intact."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from app import WORKER, create_app, sync_security
from app.composition.engine import get_composition
from app.runtime.worker import runtime_hooks
from capability import live
from tests.support.app import api_token, auth, make_config, unique
from tests.support.engine import child_env, spawned

ROOT = Path(__file__).resolve().parents[2]
WORKER_FACTORY = "app:create_app({'APG_PROCESS': 'worker'})"
# Modules a worker-role process must never import: FAB's views, REST APIs and their
# schemas, forms, migrations, the rate limiter, and our own screens and APIs.
WEB_ONLY_MODULES = (
    "flask_appbuilder.base", "flask_appbuilder.api", "flask_appbuilder.views",
    "flask_appbuilder.baseviews", "flask_appbuilder.security.sqla.manager", "marshmallow",
    "apispec", "wtforms", "flask_wtf", "flask_migrate", "alembic", "flask_limiter",
    "app.audit.api", "app.audit.views", "app.tenancy.api", "app.tenancy.views",
    "app.composition.api", "app.health", "capability.api", "capability.views",
    "capability.runs.api", "capability.runs.views", "capability.secrets.api",
    "capability.secrets.views", "capability.transport.api", "capability.transport.views",
    "capability.live_web",
    # Live updates go out through capability.live's own emitter; http tasks import
    # requests on first use.
    "socketio", "engineio", "flask_socketio", "requests",
)


def run(app: Flask, argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=child_env(app, **extra), capture_output=True,
                          text=True, timeout=120)


# -- in this process -------------------------------------------------------------------

def test_a_worker_role_app_registers_no_web(app, service_urls):
    worker = create_app(make_config(service_urls, APG_PROCESS=WORKER))
    assert worker.config["APG_PROCESS"] == "worker"
    assert "appbuilder" not in worker.extensions and "socketio" not in worker.extensions
    assert list(worker.url_map.iter_rules()) == []  # no views, APIs, static files, /health
    assert worker.blueprints == {}
    composition = get_composition(worker)
    assert composition.role == "worker"
    assert {(i.id, i.status) for i in composition.loaded} == {
        ("platform", "registered"), ("workflow", "registered")}
    hooks = runtime_hooks(worker)  # the reaper runs in workers and schedulers
    assert hooks.worker_start and hooks.maintenance
    assert {"worker", "scheduler", "audit", "reap"} <= set(worker.cli.commands)
    assert not {"up", "ensure-admin"} & set(worker.cli.commands)
    with worker.app_context(), pytest.raises(RuntimeError, match="web-role"):
        sync_security(worker)


def test_an_unknown_role_is_refused(service_urls):
    with pytest.raises(ValueError, match="APG_PROCESS"):
        create_app(make_config(service_urls, APG_PROCESS="gateway"))


# -- worker-role processes ----------------------------------------------------------------

def modules_after(app: Flask, *lines: str) -> set[str]:
    """The modules a worker-role process has loaded once ``app = create_app()`` and
    ``lines`` have run."""
    script = "\n".join(("import json, sys", "from app import create_app",
                        "app = create_app()", *lines,
                        "print(json.dumps(sorted(sys.modules)))"))
    done = run(app, [sys.executable, "-c", script], APG_PROCESS="worker")
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_worker_role_process_imports_no_web_module(app):
    loaded = modules_after(
        app, "import app.runtime.worker, capability.engine.jobs, capability.engine.reaper")
    assert {"app", "capability.engine.jobs", "flask_appbuilder.security.sqla.models"} <= loaded
    leaked = [m for m in WEB_ONLY_MODULES if m in loaded]
    assert leaked == [], f"the worker role imported web-only modules: {leaked}"


def test_a_scheduler_loads_no_engine_until_an_attempt_is_lost(app):
    """A worker-role app, as the scheduler starts it, with a reaper pass: none of the
    engine (plans, runner), the DSL's models, the expression sandbox, YAML or JSONPath;
    the engine loads in a worker with its first job, or in a pass that records a loss."""
    loaded = modules_after(app, "from capability.engine import reaper",
                           "with app.app_context():", "    reaper.reap_locked(app)")
    assert "capability.engine.reaper" in loaded
    engine = ("capability.engine.runner", "capability.engine.decide", "capability.dsl.models",
              "capability.dsl.validate", "capability.dsl.expressions", "jinja2.sandbox",
              "yaml", "jsonpath_ng")
    assert [m for m in engine if m in loaded] == []


def test_a_worker_validates_stored_definitions_without_yaml_or_jsonpath(app):
    """A worker reads definitions as objects: it never loads YAML, nor JSONPath's parser
    tables unless a task uses one, nor logging.handlers without ACCESS_LOG (about 1 MB
    each, in every worker)."""
    loaded = modules_after(
        app, "import capability.engine.jobs", "from capability import dsl",
        "assert dsl.validate_definition({'name': 'w', 'tasks': [",
        "    {'id': 't', 'type': 'transform', 'with': {'value': '{{ params }}'}}]}).valid")
    assert "capability.dsl.validate" in loaded and "capability.live" not in loaded
    assert [m for m in ("yaml", "jsonpath_ng", "logging.handlers") if m in loaded] == []


def test_the_worker_role_cli(app):
    top = run(app, [sys.executable, "-m", "app", "--help"])
    assert top.returncode == 0, top.stderr
    for command in ("worker", "scheduler", "audit", "reap"):
        assert command in top.stdout
    assert " up " not in top.stdout and "ensure-admin" not in top.stdout
    for argv in (["worker", "--help"], ["scheduler", "--help"]):
        done = run(app, [sys.executable, "-m", "app", *argv])
        assert done.returncode == 0 and "Usage: python -m app" in done.stdout, done.stderr
    verify = run(app, [sys.executable, "-m", "app", "audit", "verify"])
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify.stderr
    # The same role through the `flask` command (heavier: its plugins load all of FAB).
    for argv in (["--app", WORKER_FACTORY, "worker", "--help"],
                 ["--app", "app", "audit", "verify"]):
        done = run(app, [sys.executable, "-m", "flask", *argv], APG_PROCESS="worker")
        assert done.returncode == 0, done.stderr


def test_a_worker_role_process_records_audit_events(app):
    name = unique("tenant")
    script = (
        "from sqlalchemy import func, select\n"
        "from app import create_app\n"
        "from app.audit.models import AuditEvent\n"
        "from app.extensions import db\n"
        "from app.security.actor import SYSTEM\n"
        "from app.tenancy.service import TenantIn, create_tenant\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        f"    tenant = create_tenant(db.session, SYSTEM, TenantIn(name={name!r}))\n"
        "    print(db.session.execute(select(func.count()).select_from(AuditEvent).where(\n"
        "        AuditEvent.target_type == 'tenant', AuditEvent.target_id == tenant.id,\n"
        "        AuditEvent.action == 'create')).scalar())\n"
    )
    done = run(app, [sys.executable, "-c", script], APG_PROCESS="worker")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1"
    verify = run(app, [sys.executable, "-m", "app", "audit", "verify"])
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.fixture()
def worker_role(app, tmp_path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts `python -m app <command>` processes; stops them at the end."""
    with spawned(tmp_path, [sys.executable, "-m", "app"], child_env(app),
                 cwd=str(ROOT)) as spawn:
        yield spawn


class LiveUpdates:
    """The run updates published on the Socket.IO message queue (Redis pub/sub)."""

    def __init__(self, url: str) -> None:
        self.pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe("flask-socketio")  # Flask-SocketIO's default channel
        self.messages: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "message":
                self.messages.append(json.loads(message["data"]))

    def for_run(self, run_id: str) -> list[dict[str, Any]]:
        """The states of ``run_id`` published so far (``emit("run", state)``)."""
        return [m["data"][0] for m in list(self.messages)
                if m.get("event") == live.EVENT and m.get("room") == live.room(run_id)]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.pubsub.close()


def test_a_run_succeeds_through_worker_role_processes(app, client, factory, worker_role):
    team = factory.team()
    h = auth(api_token(client, factory.user("Author", teams=[team])["username"]))
    key = unique("flaky")
    definition = {"name": unique("wf"), "tasks": [
        # Fails once, then is retried after a delay: the scheduler moves the retry.
        {"id": "flaky", "type": "python",
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": key, "fail_times": 1}},
         "retry": {"max_attempts": 2, "delay": "200ms", "jitter": False}},
        {"id": "after", "type": "noop", "depends_on": ["flaky"],
         "with": {"value": "{{ tasks.flaky.output.calls }}"}},
    ]}
    r = client.post("/api/v1/workflows/", headers=h,
                    json={"team": team["name"], "definition": definition})
    assert r.status_code == 201, r.get_json()
    workflow_id = r.get_json()["id"]

    worker_role("worker")
    worker_role("scheduler")
    updates = LiveUpdates(app.config["REDIS_URL"])
    try:
        r = client.post(f"/api/v1/workflows/{workflow_id}/runs", headers=h, json={})
        assert r.status_code == 201, r.get_json()
        run_id = r.get_json()["id"]
        deadline = time.monotonic() + 60
        got: dict[str, Any] = {}
        while time.monotonic() < deadline:
            got = client.get(f"/api/v1/runs/{run_id}", headers=h).get_json()["result"]
            if got["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        assert got["status"] == "succeeded", got
        by_task = {t["task_id"]: t for t in got["tasks"]}
        assert by_task["flaky"]["attempts"] == 2 and by_task["flaky"]["output"] == {"calls": 2}
        assert by_task["after"]["output"] == 2
        assert by_task["flaky"]["attempt_history"][0]["worker"]  # ran in the worker process

        # The worker published each step; the last one shows the run finished.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                s["status"] == "succeeded" for s in updates.for_run(run_id)):
            time.sleep(0.05)
        states = updates.for_run(run_id)
        assert states and states[-1]["status"] == "succeeded", states
    finally:
        updates.close()
    verify = run(app, [sys.executable, "-m", "app", "audit", "verify"])
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


EXPECTED = [["-m", "app", "scheduler"], ["-m", "app", "worker"]]


def test_up_starts_its_workers_and_scheduler_in_the_worker_role(app, tmp_path):
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "up", "--port", str(port),
         "--workers", "1"],
        cwd=ROOT, env=child_env(app, ADMIN_PASSWORD="Test-Pass-123!", APG_SHUTDOWN_GRACE="5"),
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        children: dict[int, list[str]] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            children = {pid: _cmdline(pid) for pid in _children(proc.pid)}
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    healthy = json.load(r)["status"] == "ok"
            except OSError:
                healthy = False
            # A child seen between its fork and its exec (the parent's command line), or
            # one that just ended (an empty one), is not one of the two: look again.
            if healthy and sorted(argv[1:] for argv in children.values()) == EXPECTED:
                break
            time.sleep(0.2)
        commands = sorted(argv[1:] for argv in children.values())
        assert commands == EXPECTED, (
            (tmp_path / "up.log").read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text()


def test_a_burst_worker_with_nothing_to_do_returns_at_once(app):
    """A worker's shutdown does not wait out its pub/sub thread (``PromptUnsubscribe``).
    With redis-py 8.2, RQ's own ``unsubscribe`` waited the thread's whole minute when the
    thread read the UNSUBSCRIBE reply before being told to stop; here it always does."""
    from app.runtime.redis_conn import get_redis
    from app.runtime.worker import queues
    from tests.support.engine import AppSimpleWorker

    class ReplyFirst(AppSimpleWorker):
        def subscribe(self) -> None:
            super().subscribe()
            send = self.pubsub.unsubscribe

            def unsubscribe(*args: Any) -> Any:
                sent = send(*args)
                time.sleep(0.3)  # the thread reads the reply before stop() is called
                return sent

            self.pubsub.unsubscribe = unsubscribe

    started = time.monotonic()
    worker = ReplyFirst(queues(app), connection=get_redis(app))
    worker.flask_app = app
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    took = time.monotonic() - started
    assert took < 10, f"the burst worker took {took:.1f}s to return"
