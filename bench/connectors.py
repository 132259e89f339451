"""Issue 13: what a connector task costs over the same work done directly in Python.

Run from the repository root::

    .venv/bin/python bench/connectors.py            # about a minute
    .venv/bin/python bench/connectors.py --runs 10

In one process on PostgreSQL and Redis, the engine driven as ``bench/hops.py`` drives it
(sends go to an in-memory FIFO and are handled by the real ``jobs.run_attempt``: the
engine's bookkeeping, the connection's lookup and decryption, the circuit breaker in
Redis, the connector), chains of ``--chain`` tasks:

* ``sql`` ``SELECT pg_backend_pid()`` through a ``postgres`` connection, against a
  psycopg2 loop of the same statement on one connection (the direct call);
* ``http`` ``GET`` of a loopback server (``http.server``, threaded), against
  ``requests.get`` in a loop;
* ``noop``: the engine alone.

Each shape runs twice: as a worker runs a chain (the job goes on with the task its task
made ready, ``jobs.run_attempt`` following; here a stand-in for the ``AppWorker`` that
serves every queue), and one job a task (what a fan-out's tasks, or a chain on a worker
that does not serve the next task's queue, get).

The runs go round by round: in each, the direct calls (as many as a chain has tasks),
then every shape both ways, so that every figure samples the same minutes (this
machine's speed moves within minutes). Printed: ms per task p50/p99 over the runs (a
run's time / its tasks), the overhead (a run's time per task minus the median direct
call of its round, p50 over the rounds) against the target (≤ 5 ms), and how many
server connections the ``sql`` tasks used (distinct ``pg_backend_pid``) and how many TCP
connections the HTTP server accepted: a pool reused across tasks uses a few, not one a
task. Recreates the database ``apg_hops`` (``HOPS_DATABASE_URL``: one whose name
contains "hops").
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from hops import (  # noqa: E402  (bench/hops.py, next to this script)
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    build_app,
    fifo_for,
    reset_database,
)

TARGET_MS = 5.0


class Counting(http.server.ThreadingHTTPServer):
    accepted = 0

    def get_request(self) -> Any:
        Counting.accepted += 1
        return super().get_request()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API server

    def setup(self) -> None:
        super().setup()
        # As any production server: headers and body are two writes, which Nagle's
        # algorithm would hold back for the client's delayed ACK (40 ms a request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def setup(app: Any, chain: int, url: str, db_url: str) -> dict[str, str]:
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from app.extensions import db
    from app.models import Team, Tenant
    from app.security.actor import SYSTEM
    from capability import service
    from capability.connections import service as connections
    from capability.engine.settings import EngineSettings

    parsed = make_url(db_url)
    with app.app_context():
        tenant = db.session.execute(select(Tenant).where(
            Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one()
        db.session.add(Team(name="bench", tenant=tenant))
        db.session.commit()
        connections.create_connection(db.session, SYSTEM, EngineSettings.from_config(
            app.config), connections.ConnectionIn(
            team="bench", name="pg", type="postgres",
            config={"host": parsed.host or "127.0.0.1", "port": parsed.port or 5432,
                    "database": parsed.database, "username": parsed.username or "postgres"}))

        def chain_of(task: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"id": f"t{i:02d}", **task, **({"depends_on": [f"t{i - 1:02d}"]} if i else {})}
                    for i in range(chain)]

        shapes = {
            "noop": chain_of({"type": "noop"}),
            "sql": chain_of({"type": "sql", "with": {
                "connection": "pg", "query": "SELECT pg_backend_pid() AS pid", "fetch": "one"}}),
            "http": chain_of({"type": "http", "with": {"url": url}}),
        }
        ids = {key: service.create_workflow(db.session, SYSTEM, "bench", service.read_source(
            {"name": f"bench-{key}", "tasks": tasks})).id for key, tasks in shapes.items()}
        db.session.remove()
    return ids


class Serving:
    """What ``jobs`` asks of the AppWorker running its job: which queues it serves
    (all of them here) and to take a followed attempt's identity (nothing to do here:
    no RQ job is running)."""

    def queue_names(self) -> list[str]:
        return ["default"]

    def continue_as(self, job_id: str, rq_timeout: float) -> bool:
        return True


def drive(app: Any, fifo: Any, workflow_id: str) -> tuple[float, str]:
    from app.extensions import db
    from app.security.actor import SYSTEM
    from capability.engine import jobs
    from capability.models import Run
    from capability.runs.service import start_run

    with app.app_context():
        t0 = time.perf_counter()
        run, _ = start_run(db.session, SYSTEM, fifo, workflow_id, trigger="api")
        run_id = run.id
        db.session.remove()
        while fifo.items:
            item = fifo.items.popleft()
            jobs.run_attempt(item.attempt_id, item.instant)
        elapsed = time.perf_counter() - t0
        status = str(db.session.get(Run, run_id).status)
        db.session.remove()
    return elapsed, status


def pids_of(app: Any) -> set[int]:
    from sqlalchemy import select

    from app.extensions import db
    from capability.models import TaskRun

    with app.app_context():
        rows = db.session.execute(select(TaskRun.output).where(
            TaskRun.task_id.like("t%"))).scalars().all()
        db.session.remove()
    return {row["row"]["pid"] for row in rows if isinstance(row, dict) and row.get("row")}


def direct_sql(db_url: str, times: int) -> list[float]:
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(db_url)
    conn = psycopg2.connect(host=parsed.host, port=parsed.port or 5432,
                            dbname=parsed.database, user=parsed.username or "postgres")
    out = []
    with conn.cursor() as cur:
        for _ in range(times):
            t0 = time.perf_counter()
            cur.execute("SELECT pg_backend_pid()")
            cur.fetchone()
            conn.commit()
            out.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return out


def direct_http(url: str, times: int) -> list[float]:
    import requests

    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        requests.get(url, timeout=10).json()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    server = Counting(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ping"
    db_url = reset_database(os.environ.get("HOPS_DATABASE_URL", DEFAULT_DATABASE_URL))
    app = build_app(db_url, os.environ.get("HOPS_REDIS_URL", DEFAULT_REDIS_URL),
                    Path(tempfile.mkdtemp(prefix="apg-connectors-")), live=False)
    # The bench's own database and server are on loopback: allowed for its tasks.
    app.config["EGRESS_ALLOW"] = f"127.0.0.1 127.0.0.1:{db_url.rsplit(':', 1)[-1].split('/')[0]}"
    from capability.engine import jobs

    fifo = fifo_for(app)
    jobs._dispatcher = lambda: fifo  # type: ignore[assignment]
    jobs._worker_name = lambda: "bench"  # type: ignore[assignment]
    ids = setup(app, args.chain, url, db_url)
    serving = Serving()
    modes = (("a chain on a worker", lambda: serving), ("one job a task", lambda: None))
    per_task: dict[tuple[str, str], list[float]] = {}
    overheads: dict[tuple[str, str], list[float]] = {}
    direct: dict[str, list[float]] = {"sql": [], "http": []}
    for _mode, serves in modes:  # warm: imports, pools, caches
        jobs.serving = serves  # type: ignore[assignment]
        for key in ("noop", "sql", "http"):
            drive(app, fifo, ids[key])
    accepted = 0  # by the engine's tasks only (requests.get opens one per call)
    # Round by round, every shape and the direct calls in the same minute: this machine's
    # speed moves within minutes, and an overhead is the engine's time minus the direct
    # call's measured next to it.
    for _ in range(args.runs):
        now = {"sql": direct_sql(db_url, args.chain), "http": direct_http(url, args.chain)}
        for key, values in now.items():
            direct[key] += values
        for mode, serves in modes:
            jobs.serving = serves  # type: ignore[assignment]
            for key in ("noop", "sql", "http"):
                before = Counting.accepted
                elapsed, status = drive(app, fifo, ids[key])
                assert status == "succeeded", (key, status)
                accepted += Counting.accepted - before
                per_task.setdefault((mode, key), []).append(elapsed * 1000 / args.chain)
                if key != "noop":
                    overheads.setdefault((mode, key), []).append(
                        elapsed * 1000 / args.chain - statistics.median(now[key]))
    pids = pids_of(app)
    tasks = args.chain * (args.runs + 1) * len(modes)
    rows = []
    for mode, _ in modes:
        noop = per_task[(mode, "noop")]
        rows.append((f"[{mode}] noop task through the engine (the engine alone)",
                     f"{pct(noop, 0.5):.2f} / {pct(noop, 0.99):.2f} ms", ""))
        for key, what in (("sql", "sql SELECT pg_backend_pid()"),
                          ("http", "http GET loopback")):
            values = per_task[(mode, key)]
            overhead = pct(overheads[(mode, key)], 0.5)
            rows.append((f"[{mode}] {what}: through the engine, per task p50 / p99",
                         f"{pct(values, 0.5):.2f} / {pct(values, 0.99):.2f} ms", ""))
            rows.append((f"[{mode}] {what}: engine overhead, p50", f"{overhead:.2f} ms",
                         f"target ≤ {TARGET_MS:g} ms: "
                         f"{'met' if overhead <= TARGET_MS else 'NOT met'}"))
    for key, what in (("sql", "sql SELECT pg_backend_pid()"), ("http", "http GET loopback")):
        rows.append((f"{what}: direct call, p50 / p99",
                     f"{statistics.median(direct[key]):.2f} / {pct(direct[key], 0.99):.2f} ms",
                     "psycopg2 on one connection" if key == "sql" else "requests.get"))
    rows.append(("sql: server connections used by the tasks", f"{len(pids)}",
                 f"for {tasks} tasks (distinct pg_backend_pid)"))
    rows.append(("http: new TCP connections the server accepted", f"{accepted}",
                 f"for {args.chain * args.runs * len(modes)} tasks (after a warm-up run)"))
    width = max(len(r[0]) for r in rows)
    print(f"\nbench/connectors.py (PostgreSQL, Redis; in-process engine; chains of {args.chain}, "
          f"{args.runs} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"| {'metric'.ljust(width)} | value | notes |")
    print(f"|{'-' * (width + 2)}|-------|-------|")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value} | {note} |")
    server.shutdown()


if __name__ == "__main__":
    main()
