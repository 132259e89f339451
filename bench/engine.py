"""Engine benchmark (issue 3): real processes on PostgreSQL + Redis, 2 workers.

Run from the repository root::

    .venv/bin/python bench/engine.py            # the full run (a few minutes)
    .venv/bin/python bench/engine.py --quick    # a smoke check (fewer repetitions)

What it does:

* recreates the PostgreSQL database ``apg_bench`` (127.0.0.1:5432, user postgres) and
  flushes Redis DB 12 (127.0.0.1:6379), or uses ``BENCH_DATABASE_URL`` (its database
  name must contain "bench": it is dropped and created again) and ``BENCH_REDIS_URL``
  (flushed);
* migrates, creates a team and the benchmark workflows through the services
  (in this process, acting as the system Admin);
* starts 2 ``flask --app app worker`` (``AppWorker``: jobs in its own process), 1 ``flask --app app
  scheduler`` and 1 web process (``flask --app <app> run``, Werkzeug; its RSS stands for
  the web process of ``flask --app app up``) and waits for the 2 workers to register;
* triggers runs in this process with ``capability.runs.start_run`` (what the API does),
  and reads the outcome from the database. Times are database timestamps written by
  the workers (``Run.finished_at``, ``TaskRun.finished_at``, ``TaskAttempt.started_at``)
  minus the trigger time taken just before ``start_run``; this process only polls
  (every 5 ms) to know when to read them, so the poll interval does not enter a figure.

Measured: (a) W1, 40 sequential no-op tasks; (b) W2, a 40-way fan-out and a join;
(c) a 1,000-task fan-out (one root, 999 dependents), tasks/s; (d) trigger-to-first-task
start latency over 200 one-task runs; (e) the raw ceiling: 1,000 no-op RQ jobs
(``operator.truth(1)``) on the same queue, consumed by the same 2 AppWorker processes,
and (c) as a ratio of it; (f) total RSS of web + 2 workers (with any child process of
a `python` task alive at the time) + scheduler: idle, after (c), and after repeated (c) runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/apg_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SECRET_KEY = "apg-bench-secret-key-0123456789abcdef0123456789"
# The web child never touches permissions (this process did).
CHILD_APP = "app:create_app({{'APG_SYNC_SECURITY': False, 'APG_LIVE_UPDATES': {live}}})"
# Workers and the scheduler run as `flask --app app up` starts them: `python -m app`, the
# worker process role (no views, APIs or Socket.IO server; never a permission sync).
WORKER_ROLE_COMMANDS = ("worker", "scheduler")
POLL = 0.005  # seconds between "is it finished yet?" queries (the first 2 s of a wait)
SLOW_POLL = 0.05  # after that: long runs need no 200 queries a second
MB = 1_000_000

TARGETS = {
    "w1": 0.4,  # seconds
    "ratio": 0.60,  # (c) / raw RQ
    "p50": 0.020,  # seconds
    "p99": 0.100,
    "rss": 400 * MB,
    "growth": 10 * MB,  # "not growing": at most this much over the repeated (c) runs
}


# --------------------------------------------------------------------------- services


def reset_database(url: str, marker: str = "bench") -> str:
    """Drop and create the benchmark database (its name must contain ``marker``);
    returns the psycopg2 URL."""
    import sqlalchemy as sa

    from config import database_url

    url = database_url(url)
    parsed = sa.engine.make_url(url)
    name = parsed.database or ""
    if marker not in name:
        raise SystemExit(f"refusing to recreate database {name!r}: its name must contain "
                         f"{marker!r}")
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Fleet:
    """The web, worker and scheduler processes; stopped on every way out."""

    env: dict[str, str]
    logdir: Path
    live: bool
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Child:
        """``python -m app worker|scheduler`` or ``flask --app <app> <args>`` (the web)"""
        if args and args[0] in WORKER_ROLE_COMMANDS:
            # Settings through the environment, as in production.
            return self.spawn(name, [sys.executable, "-m", "app", *args],
                              env={"APG_LIVE_UPDATES": "1" if self.live else "0"})
        app = CHILD_APP.format(live=self.live)
        return self.spawn(name, [sys.executable, "-m", "flask", "--app", app, *args])

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        from app.runtime.redis_conn import pdeathsig_preexec

        child = Child(name, argv, self.logdir / f"{name}.log")
        with child.log.open("wb") as log:
            child.proc = subprocess.Popen(
                argv, cwd=ROOT, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C reaches this process only, which then
                # stops each child once; the kernel stops them should this one be killed.
                process_group=0, preexec_fn=pdeathsig_preexec(),
            )
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; "
                                   f"see {child.log}")

    def stop(self, names: list[str] | None = None) -> None:
        chosen = [c for c in self.children if names is None or c.name in names]
        live = [c.proc for c in chosen if c.proc is not None and c.proc.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self.children = [c for c in self.children if c not in chosen]


def _proc_children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def rss_bytes(pid: int, with_children: bool = False, pss: bool = False) -> int:
    """VmRSS of ``pid`` (and, for a worker, of any child it has at the moment);
    ``pss``: the proportional set size instead (shared pages split between sharers)."""
    total = 0
    pids = [pid, *(_proc_children(pid) if with_children else [])]
    path, key = ("smaps_rollup", "Pss:") if pss else ("status", "VmRSS:")
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/{path}").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1]) * 1024
    return total


def memory(fleet: Fleet) -> dict[str, int]:
    out: dict[str, int] = {}
    pss = 0
    for child in fleet.children:
        assert child.proc is not None
        children = child.name.startswith("worker")
        out[child.name] = rss_bytes(child.proc.pid, with_children=children)
        pss += rss_bytes(child.proc.pid, with_children=children, pss=True)
    out["total"] = sum(out.values())
    out["total PSS (info)"] = pss
    out["bench (this process, not counted)"] = rss_bytes(os.getpid())
    return out


# ---------------------------------------------------------------------------- engine


def definitions(fanout: int) -> dict[str, dict[str, Any]]:
    noop = {"type": "noop"}
    chain = [{"id": "t00", **noop}] + [
        {"id": f"t{i:02d}", **noop, "depends_on": [f"t{i - 1:02d}"]} for i in range(1, 40)
    ]
    branches = [f"b{i:02d}" for i in range(40)]
    fan_join = [
        {"id": "start", **noop},
        *({"id": b, **noop, "depends_on": ["start"]} for b in branches),
        {"id": "join", **noop, "depends_on": branches},
    ]
    wide = [{"id": "root", **noop}] + [
        {"id": f"f{i:04d}", **noop, "depends_on": ["root"]} for i in range(fanout - 1)
    ]
    return {
        "w1": {"name": "bench-w1-chain-40", "tasks": chain},
        "w2": {"name": "bench-w2-fanout-40-join", "tasks": fan_join},
        "fanout": {"name": f"bench-fanout-{fanout}", "tasks": wide},
        "single": {"name": "bench-single-noop", "tasks": [{"id": "only", **noop}]},
    }


@dataclass
class RunResult:
    run_id: str
    status: str
    tasks: int
    wall: float  # trigger -> Run.finished_at
    last_task: float  # trigger -> the last TaskRun.finished_at
    first_task: float  # trigger -> the first TaskRun.finished_at
    first_start: float  # trigger -> the first TaskAttempt.started_at


class Bench:
    def __init__(self, app: Any, fleet: Fleet, workflow_ids: dict[str, str]) -> None:
        from app.extensions import db
        from app.runtime.redis_conn import get_redis
        from capability.engine.dispatch import dispatcher_for

        self.app = app
        self.fleet = fleet
        self.workflow_ids = workflow_ids
        self.db = db
        self.redis = get_redis(app)
        # As the API builds it.
        self.dispatcher = dispatcher_for(app)
        self.poller = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # While a run is waited for: the highest memory() total seen (sampled each second).
        self.peak: dict[str, int] | None = None
        self.sample_memory = False

    def trigger(self, key: str) -> tuple[str, dt.datetime]:
        from app.security.actor import SYSTEM
        from capability.runs.service import start_run

        t0 = dt.datetime.now(dt.UTC)
        run, _ = start_run(self.db.session, SYSTEM, self.dispatcher, self.workflow_ids[key],
                           trigger="api")
        run_id = run.id
        self.db.session.remove()
        return run_id, t0

    def wait(self, run_id: str, timeout: float) -> str:
        import sqlalchemy as sa

        from capability import dsl

        finished = {s.value for s in dsl.FINISHED_RUN_STATUSES}
        query = sa.text("SELECT status FROM apg_run WHERE id = :id")
        started = time.monotonic()
        deadline = started + timeout
        sampled = 0.0
        while True:
            if self.sample_memory and time.monotonic() - sampled >= 1:
                sampled = time.monotonic()
                now = memory(self.fleet)
                if self.peak is None or now["total"] > self.peak["total"]:
                    self.peak = now
            status = str(self.poller.execute(query, {"id": run_id}).scalar_one())
            if status in finished:
                return status
            if time.monotonic() > deadline:
                self.fleet.check()
                raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f}s")
            time.sleep(POLL if time.monotonic() - started < 2 else SLOW_POLL)

    def run(self, key: str, timeout: float = 120) -> RunResult:
        import sqlalchemy as sa

        run_id, t0 = self.trigger(key)
        status = self.wait(run_id, timeout)
        row = self.poller.execute(sa.text(
            "SELECT r.finished_at, max(t.finished_at), count(DISTINCT t.id), min(a.started_at),"
            " min(t.finished_at)"
            " FROM apg_run r JOIN apg_task_run t ON t.run_id = r.id"
            " LEFT JOIN apg_task_attempt a ON a.task_run_id = t.id"
            " WHERE r.id = :id GROUP BY r.finished_at"), {"id": run_id}).one()
        if status != "succeeded":
            raise RuntimeError(f"run {run_id} of {key} ended {status}")
        return RunResult(run_id, status, int(row[2]), (row[0] - t0).total_seconds(),
                         (row[1] - t0).total_seconds(), (row[4] - t0).total_seconds(),
                         (row[3] - t0).total_seconds())

    # raw RQ ------------------------------------------------------------------------

    def jobs_done(self, queue: str = "default") -> int:
        from rq import Queue, Worker

        total = 0
        for worker in Worker.all(queue=Queue(queue, connection=self.redis)):
            for name in ("successful_job_count", "failed_job_count"):
                total += int(self.redis.hget(worker.key, name) or 0)
        return total

    def raw_rq(self, n: int, queue_name: str = "default", timeout: float = 300) -> float:
        """Seconds for the workers of ``queue_name`` to run ``n`` no-op jobs enqueued at
        once (the enqueue included): ``operator.truth(1)``, importable by any worker."""
        from rq import Queue

        queue = Queue(queue_name, connection=self.redis)
        before = self.jobs_done(queue_name)
        t0 = time.perf_counter()
        with self.redis.pipeline() as pipe:
            queue.enqueue_many(
                [Queue.prepare_data("operator.truth", (1,), result_ttl=0, failure_ttl=3600)
                 for _ in range(n)], pipeline=pipe)
            pipe.execute()
        deadline = time.monotonic() + timeout
        while self.jobs_done(queue_name) - before < n:
            if time.monotonic() > deadline:
                self.fleet.check()
                raise TimeoutError(f"raw RQ jobs not done after {timeout:.0f}s")
            time.sleep(POLL)
        return time.perf_counter() - t0

    def plain_rq(self, n: int, worker_class: str) -> float:
        """Context for (e): the same jobs on 2 stock ``rq worker`` processes of
        ``worker_class`` (no app context), on a queue of their own."""
        queue = "bench-plain"
        rq_cli = str(Path(sys.executable).with_name("rq"))
        url = self.app.config["REDIS_URL"]
        names = [f"rq-{worker_class.rsplit('.', 1)[-1]}-{i}" for i in (1, 2)]
        for name in names:
            self.fleet.spawn(name, [rq_cli, "worker", "-u", url, "-w", worker_class, queue])
        try:
            wait_for_workers(self, 2, queue)
            return self.raw_rq(n, queue)
        finally:
            self.fleet.stop(names)


# ---------------------------------------------------------------------------- set-up


def build_app(db_url: str, redis_url: str, instance: Path, live: bool) -> Any:
    from flask_migrate import upgrade

    from app import create_app, sync_security
    from app.extensions import db

    config = {"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
              "SECRET_KEY": SECRET_KEY, "INSTANCE_DIR": str(instance),
              "APG_SYNC_SECURITY": False, "APG_LIVE_UPDATES": live}
    first = create_app(config)
    with first.app_context():
        upgrade()
        sync_security(first)
        db.session.remove()
        db.engine.dispose()
    return create_app(config)


def create_workflows(app: Any, fanout: int) -> dict[str, str]:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Team, Tenant
    from app.security.actor import SYSTEM
    from capability import service

    tenant = db.session.execute(
        select(Tenant).where(Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one()
    db.session.add(Team(name="bench", tenant=tenant))
    db.session.commit()
    ids = {}
    for key, definition in definitions(fanout).items():
        workflow = service.create_workflow(db.session, SYSTEM, "bench",
                                           service.read_source(definition))
        ids[key] = workflow.id
    db.session.remove()
    return ids


def wait_for_workers(bench: Bench, count: int, queue: str = "default",
                     timeout: float = 90) -> None:
    from rq import Queue, Worker

    deadline = time.monotonic() + timeout
    while len(Worker.all(queue=Queue(queue, connection=bench.redis))) < count:
        bench.fleet.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} workers registered after {timeout:.0f}s")
        time.sleep(0.1)


def wait_idle(bench: Bench, timeout: float = 30) -> None:
    """Until no worker runs a job and the queues are empty (a run's last task has
    finished before its job has sent, published and returned)."""
    from rq import Queue, Worker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = any(w.get_current_job_id() for w in Worker.all(connection=bench.redis))
        queued = sum(Queue(name, connection=bench.redis).count
                     for name in bench.app.config["RQ_QUEUES"])
        if not busy and not queued:
            return
        time.sleep(0.1)


def warm_web(port: int, fleet: Fleet, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        fleet.check()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                r.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for path in ("/health", "/login/", "/health", "/login/"):
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            r.read()


# --------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("pass" if ok else "**FAIL**")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mb(value: float) -> str:
    return f"{value / MB:.0f} MB"


def step(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(label: str, reps: int, fn: Callable[[], RunResult]) -> list[RunResult]:
    results = []
    for i in range(reps):
        result = fn()
        results.append(result)
        step(f"{label} {i + 1}/{reps}: {result.tasks} tasks, finished in {result.wall:.3f} s")
    return results


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    def _raise(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke check)")
    parser.add_argument("--fanout", type=int, default=None,
                        help="tasks of the (c) fan-out workflow, at most 1000 "
                             "(default 1000; --quick: 200)")
    parser.add_argument("--live-updates", action=argparse.BooleanOptionalAction, default=True,
                        help="APG_LIVE_UPDATES of every process (default: on, as shipped)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="extra (c) runs for the memory-growth check (default 3; --quick: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    args = parser.parse_args()

    quick = args.quick
    fanout = args.fanout or (200 if quick else 1000)
    reps = 2 if quick else 5
    latency_runs = 30 if quick else 200
    repeats = args.repeats if args.repeats is not None else (1 if quick else 3)

    instance = Path(tempfile.mkdtemp(prefix="apg-bench-"))
    os.environ["APG_INSTANCE_DIR"] = str(instance)  # read by `config` at import
    db_url = reset_database(os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS_URL

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    step(f"database {db_url.rsplit('@', 1)[-1]}, redis {redis_url}, logs {instance}")

    app = build_app(db_url, redis_url, instance, args.live_updates)
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "SECRET_KEY": SECRET_KEY, "APG_SYNC_SECURITY": "0",
           "APG_INSTANCE_DIR": str(instance)}
    fleet = Fleet(env, instance, args.live_updates)
    ok = False
    with terminated_on_sigterm(), app.app_context():
        try:
            workflow_ids = create_workflows(app, fanout)
            port = free_port()
            fleet.start("web", "run", "--host", "127.0.0.1", "--port", str(port),
                        "--no-reload", "--no-debugger")
            fleet.start("worker-1", "worker")
            fleet.start("worker-2", "worker")
            fleet.start("scheduler", "scheduler")
            bench = Bench(app, fleet, workflow_ids)
            wait_for_workers(bench, 2)
            warm_web(port, fleet)
            time.sleep(2)
            figures = measure(bench, fanout, reps, latency_runs, repeats)
            figures["quick"] = quick
            figures["live_updates"] = args.live_updates
            figures["load_after"] = os.getloadavg()
            report(figures)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2, default=str))
            ok = True
        finally:
            fleet.stop()
            with contextlib.suppress(Exception):
                app.extensions["sqlalchemy"].engine.dispose()
            if ok and not args.keep:
                shutil.rmtree(instance, ignore_errors=True)
            else:
                print(f"logs kept in {instance}", file=sys.stderr)
    return 0


def measure(bench: Bench, fanout: int, reps: int, latency_runs: int,
            repeats: int) -> dict[str, Any]:
    import sqlalchemy as sa
    from redis import __version__ as redis_py

    figures: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "postgresql": bench.poller.execute(sa.text("SHOW server_version")).scalar(),
            "redis": bench.redis.info("server").get("redis_version"), "redis-py": redis_py,
            "kernel": platform.release(), "git": git_state(),
        },
        "load_before": os.getloadavg(),
        "fanout_tasks": fanout, "reps": reps, "latency_runs": latency_runs,
    }
    figures["rss_idle"] = memory(bench.fleet)
    step(f"idle RSS: {mb(figures['rss_idle']['total'])}")

    step("warm-up")
    for _ in range(3):
        bench.run("single")
    bench.run("w1")
    bench.run("w2")

    w1 = timed("(a) W1", reps, lambda: bench.run("w1"))
    figures["w1"] = [r.wall for r in w1]
    w2 = timed("(b) W2", reps, lambda: bench.run("w2"))
    figures["w2"] = [r.wall for r in w2]

    step(f"(d) latency over {latency_runs} one-task runs")
    latency = []
    single_wall = []
    for _ in range(latency_runs):
        result = bench.run("single")
        latency.append(result.first_start)
        single_wall.append(result.wall)
    figures["latency"] = latency
    figures["single_wall"] = single_wall

    raw = []
    step(f"(e) raw RQ: {fanout} no-op jobs")
    raw.append(bench.raw_rq(fanout))
    step(f"(e) raw RQ: {fanout / raw[-1]:.1f} jobs/s")

    fan = []
    roots = []
    peaks = []
    rss_runs = []
    for i in range(1 + repeats):
        label = "(c) fan-out" if i == 0 else f"(f) repeated fan-out {i}/{repeats}"
        bench.sample_memory, bench.peak = True, None
        result = bench.run("fanout", timeout=7200)
        bench.sample_memory = False
        fan.append(result.last_task)
        roots.append(result.first_task)
        peaks.append(bench.peak or {})
        wait_idle(bench)
        rss_runs.append(memory(bench.fleet))
        step(f"{label}: {result.tasks} tasks, last finished after {result.last_task:.2f} s "
             f"({result.tasks / result.last_task:.1f} tasks/s); "
             f"RSS {mb(rss_runs[-1]['total'])}")
    figures["fanout"] = fan
    figures["fanout_root"] = roots
    figures["rss_peak_during"] = peaks
    figures["rss_after"] = rss_runs

    if repeats > 1:
        step(f"(e) raw RQ again: {fanout} no-op jobs")
        raw.append(bench.raw_rq(fanout))
        step(f"(e) raw RQ: {fanout / raw[-1]:.1f} jobs/s")
    figures["raw"] = raw

    plain = {}
    for worker_class in ("rq.worker.Worker", "rq.worker.SimpleWorker"):
        step(f"context: {fanout} no-op jobs on 2 stock `rq worker -w {worker_class}`")
        plain[worker_class] = bench.plain_rq(fanout, worker_class)
        step(f"context: {fanout / plain[worker_class]:.1f} jobs/s")
    figures["plain"] = plain
    return figures


def report(f: dict[str, Any]) -> None:
    n = f["fanout_tasks"]
    w1 = statistics.median(f["w1"])
    w2 = statistics.median(f["w2"])
    ours = statistics.median(n / s for s in f["fanout"])
    raw = statistics.median(n / s for s in f["raw"])
    ratio = ours / raw
    p50, p99 = pct(f["latency"], 50), pct(f["latency"], 99)
    idle = f["rss_idle"]["total"]
    after = f["rss_after"][0]["total"]
    last = f["rss_after"][-1]["total"]
    growth = last - after
    peak_sample = max(f["rss_peak_during"], key=lambda m: m.get("total", 0))
    peak = peak_sample.get("total", 0)

    def with_pss(sample: dict[str, int]) -> str:
        return f"{mb(sample.get('total', 0))} (PSS {mb(sample.get('total PSS (info)', 0))})"
    reps = f["reps"]
    fan_runs = len(f["fanout"])
    rows = [
        (f"(a) W1: 40 sequential no-op tasks, trigger → run finished (median of {reps})",
         f"{w1:.3f} s", "≤ 0.4 s", w1 <= TARGETS["w1"]),
        (f"(b) W2: 40-way fan-out + join, 42 tasks (median of {reps})", f"{w2:.3f} s", "—",
         None),
        (f"(c) {n:,}-task fan-out, trigger → last task finished (median of {fan_runs})",
         f"{ours:.1f} tasks/s ({statistics.median(f['fanout']):.2f} s)", "—", None),
        (f"(e) raw RQ: {n:,} no-op jobs, same 2 AppWorkers (median of {len(f['raw'])})",
         f"{raw:.1f} jobs/s", "—", None),
        ("(e) (c) as a share of raw RQ", f"{ratio:.0%}", "≥ 60%", ratio >= TARGETS["ratio"]),
        (f"(d) trigger → first task start, p50 ({len(f['latency'])} runs)", ms(p50),
         "≤ 20 ms", p50 <= TARGETS["p50"]),
        (f"(d) trigger → first task start, p99 ({len(f['latency'])} runs)", ms(p99),
         "≤ 100 ms", p99 <= TARGETS["p99"]),
        ("(f) RSS web + 2 workers + scheduler, idle", with_pss(f["rss_idle"]), "≤ 400 MB",
         idle <= TARGETS["rss"]),
        ("(f) RSS, after (c), workers idle again", with_pss(f["rss_after"][0]), "≤ 400 MB",
         after <= TARGETS["rss"]),
        ("(f) RSS, peak sampled during (c) (task processes included)", with_pss(peak_sample),
         "≤ 400 MB", peak <= TARGETS["rss"]),
        (f"(f) RSS growth over {fan_runs - 1} repeated (c) runs", f"{growth / MB:+.1f} MB",
         "not growing (≤ +10 MB)", growth <= TARGETS["growth"]),
    ]
    machine = f["machine"]
    print()
    print(f"Machine: {machine['cpus']} CPUs, Linux {machine['kernel']}, "
          f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
          f"Redis {machine['redis']}; code {machine['git']}")
    print(f"2 AppWorkers, 1 scheduler, web = `flask run` (Werkzeug); live updates "
          f"(APG_LIVE_UPDATES) {'on' if f['live_updates'] else 'off'}; load average "
          f"before {f['load_before'][0]:.2f}, after {f['load_after'][0]:.2f} (1 min)"
          f"{' — QUICK MODE' if f['quick'] else ''}")
    print()
    print("| metric | measured | target | result |")
    print("|---|---|---|---|")
    for metric, measured, target, ok in rows:
        print(f"| {metric} | {measured} | {target} | {verdict(ok)} |")
    print()
    single = f["single_wall"]
    print(f"One-task run, trigger → run finished: p50 {ms(pct(single, 50))}, "
          f"p99 {ms(pct(single, 99))}; (d) min {ms(min(f['latency']))}, "
          f"max {ms(max(f['latency']))}")
    print(f"W1 runs (s): {', '.join(f'{s:.3f}' for s in f['w1'])}; "
          f"per task hop ≈ {ms(w1 / 40)}")
    print(f"W2 runs (s): {', '.join(f'{s:.3f}' for s in f['w2'])}")
    print(f"(c) runs (s): {', '.join(f'{s:.2f}' for s in f['fanout'])}; "
          f"root task of (c) finished after (s): "
          f"{', '.join(f'{s:.2f}' for s in f['fanout_root'])}; "
          f"raw RQ runs (s): {', '.join(f'{s:.2f}' for s in f['raw'])}")
    print("Context, the same no-op jobs on 2 stock `rq worker` processes (no app): "
          + "; ".join(f"{k.rsplit('.', 1)[-1]} {n / v:.1f} jobs/s"
                      for k, v in f["plain"].items()))
    print("RSS by process (MB; a worker includes its task process when it had one):")
    samples = [("idle", f["rss_idle"]),
               *((f"after (c) #{i + 1}", m) for i, m in enumerate(f["rss_after"])),
               *((f"peak during (c) #{i + 1}", m)
                 for i, m in enumerate(f["rss_peak_during"]))]
    for label, sample in samples:
        print(f"  {label}: " + ", ".join(f"{k} {v / MB:.0f}" for k, v in sample.items()))


if __name__ == "__main__":
    sys.exit(main())
