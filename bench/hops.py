"""Per-hop cost of the engine's bookkeeping, in one process on PostgreSQL (no RQ).

Run from the repository root::

    .venv/bin/python bench/hops.py              # chain of 40, fan-outs of 1,000 (+/- join)
    .venv/bin/python bench/hops.py --live       # also build and serialise live updates

What it does: recreates the PostgreSQL database ``apg_hops`` (127.0.0.1:5432, user
postgres; ``HOPS_DATABASE_URL`` chooses another whose name contains "hops"), migrates,
creates a team and two workflows, then drives runs to the end in this process: every
``Send`` a transaction returns goes to an in-memory FIFO instead of Redis, and each is
handled by the real ``jobs.run_attempt`` (begin, execute the no-op, complete, advance),
so what is timed is the database work of a hop plus the Python around it; Redis, RQ
and worker forks are not part of it (``bench/engine.py`` measures the whole system).

Printed: wall time of 40 sequential no-op tasks (and ms per hop), the throughput of a
1,000-task fan-out with a join and of one without (the shape of ``bench/engine.py``'s
(c)), in tasks/s, and the SQL statements per hop. ``--live``
turns ``APG_LIVE_UPDATES`` on with an emitter that serialises the state and drops it
(what the worker pays per publish, without a message queue).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/apg_hops"
# Nothing is written to Redis; the app only needs an address for its Socket.IO setup.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
SECRET_KEY = "apg-hops-secret-key-0123456789abcdef0123456789"


def reset_database(url: str) -> str:
    from engine import reset_database as reset  # bench/engine.py, next to this script

    return reset(url, marker="hops")


def build_app(db_url: str, redis_url: str, instance: Path, live: bool,
              pre_ping: bool = True, migrate: bool = True) -> Any:
    from flask_migrate import upgrade

    from app import create_app, sync_security
    from app.extensions import db

    config = {"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
              "SECRET_KEY": SECRET_KEY, "INSTANCE_DIR": str(instance),
              "APG_SYNC_SECURITY": False, "APG_LIVE_UPDATES": live, "LOG_LEVEL": "WARNING"}
    if not pre_ping:
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": False}
    if not migrate:  # a second process on a database another has migrated
        return create_app(config)
    first = create_app(config)
    with first.app_context():
        upgrade()
        sync_security(first)
        db.session.remove()
        db.engine.dispose()
    return create_app(config)


def definitions(chain: int, fanout: int) -> dict[str, dict[str, Any]]:
    noop = {"type": "noop"}
    seq = [{"id": "t000", **noop}] + [
        {"id": f"t{i:03d}", **noop, "depends_on": [f"t{i - 1:03d}"]} for i in range(1, chain)
    ]
    leaves = [f"f{i:04d}" for i in range(fanout - 2)]
    wide = [{"id": "root", **noop},
            *({"id": leaf, **noop, "depends_on": ["root"]} for leaf in leaves),
            {"id": "join", **noop, "depends_on": leaves}]
    # What bench/engine.py's (c) runs: no join, so each leaf's end asks whether the run
    # is over.
    open_ended = [{"id": "root", **noop},
                  *({"id": f"f{i:04d}", **noop, "depends_on": ["root"]}
                    for i in range(fanout - 1))]
    return {"chain": {"name": f"hops-chain-{chain}", "tasks": seq},
            "fanout": {"name": f"hops-fanout-{fanout}", "tasks": wide},
            "leaves": {"name": f"hops-leaves-{fanout}", "tasks": open_ended}}


def create_workflows(app: Any, chain: int, fanout: int) -> dict[str, str]:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Team, Tenant
    from app.security.actor import SYSTEM
    from capability import service

    with app.app_context():
        tenant = db.session.execute(
            select(Tenant).where(Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one()
        db.session.add(Team(name="hops", tenant=tenant))
        db.session.commit()
        ids = {}
        for key, definition in definitions(chain, fanout).items():
            workflow = service.create_workflow(db.session, SYSTEM, "hops",
                                               service.read_source(definition))
            ids[key] = workflow.id
        db.session.remove()
    return ids


def fifo_for(app: Any) -> Any:
    """A dispatcher whose sends wait here, in order, instead of in RQ; it publishes live
    updates as a worker's does (coalesced)."""
    from capability.engine.dispatch import Dispatcher, dispatcher_for

    class Fifo(Dispatcher):
        def __init__(self) -> None:
            real = dispatcher_for(app, coalesce=True)
            super().__init__(real.conn, real.settings, real._publish)
            self.items: collections.deque[Any] = collections.deque()

        def send(self, items: list[Any]) -> None:
            self.items.extend(items)

        def stop(self, attempt_ids: list[str]) -> None:
            pass

    return Fifo()


class NullEmitter:
    """Serialises what would go to the message queue, then drops it."""

    published = 0

    def emit(self, event: str, data: Any, **kwargs: Any) -> None:
        json.dumps(data)
        NullEmitter.published += 1


class Statements:
    """Counts the SQL statements the app's engine executes."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self._one)

    def _one(self, *args: Any) -> None:
        self.count += 1


def drive(app: Any, fifo: Any, workflow_id: str) -> tuple[str, float, float, int]:
    """Start a run and handle every Send until none is left:
    (status, seconds, CPU seconds of this process, hops)."""
    from app.extensions import db
    from app.security.actor import SYSTEM
    from capability.engine import jobs
    from capability.models import Run
    from capability.runs.service import start_run

    with app.app_context():
        t0, c0 = time.perf_counter(), time.process_time()
        run, _ = start_run(db.session, SYSTEM, fifo, workflow_id, trigger="api")
        run_id = run.id
        db.session.remove()
        hops = 0
        while fifo.items:
            item = fifo.items.popleft()
            if item.child_run is not None or item.finish_delay or item.delay:
                raise RuntimeError(f"unexpected send {item} in a no-op workflow")
            jobs.run_attempt(item.attempt_id, item.instant)
            hops += 1
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        status = db.session.get(Run, run_id).status
        db.session.remove()
    return str(status), elapsed, cpu, hops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--fanout", type=int, default=1000, help="tasks, root and join included")
    parser.add_argument("--repeats", type=int, default=5, help="chain runs (median taken)")
    parser.add_argument("--fanout-repeats", type=int, default=1)
    parser.add_argument("--live", action="store_true", help="publish live updates (null emitter)")
    parser.add_argument("--no-pre-ping", action="store_true",
                        help="pool_pre_ping off (it costs a round trip per transaction)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once the app is built (what a worker could do at start: "
                             "a full collection of the app's objects takes ~0.1 s)")
    parser.add_argument("--profile", metavar="FILE",
                        help="write a cProfile of both fan-out runs to FILE (pstats format)")
    args = parser.parse_args()

    from app.extensions import db
    from capability import live
    from capability.engine import jobs

    db_url = reset_database(os.environ.get("HOPS_DATABASE_URL", DEFAULT_DATABASE_URL))
    redis_url = os.environ.get("HOPS_REDIS_URL", DEFAULT_REDIS_URL)
    instance = Path(tempfile.mkdtemp(prefix="apg-hops-"))
    app = build_app(db_url, redis_url, instance, args.live, pre_ping=not args.no_pre_ping)
    ids = create_workflows(app, args.chain, args.fanout)
    with app.app_context():
        fifo = fifo_for(app)
    jobs._dispatcher = lambda: fifo  # type: ignore[assignment]
    jobs._worker_name = lambda: "hops"  # type: ignore[assignment]
    live._emitter = lambda app: NullEmitter()  # type: ignore[assignment]
    with app.app_context():
        statements = Statements(db.engine)
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()

    drive(app, fifo, ids["chain"])  # warm-up: imports, caches, connection pool
    chain_times, chain_cpu, chain_statements = [], [], []
    for _ in range(args.repeats):
        before = statements.count
        status, seconds, cpu, hops = drive(app, fifo, ids["chain"])
        assert status == "succeeded" and hops == args.chain, (status, hops)
        chain_times.append(seconds)
        chain_cpu.append(cpu / hops)
        chain_statements.append((statements.count - before) / hops)
    rates: dict[str, list[float]] = {"fanout": [], "leaves": []}
    cpus: dict[str, list[float]] = {"fanout": [], "leaves": []}
    counts: dict[str, list[float]] = {"fanout": [], "leaves": []}
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    for _ in range(args.fanout_repeats):
        for key in ("fanout", "leaves"):
            before = statements.count
            if profiler is not None:
                profiler.enable()
            status, seconds, cpu, hops = drive(app, fifo, ids[key])
            if profiler is not None:
                profiler.disable()
            assert status == "succeeded" and hops == args.fanout, (key, status, hops)
            rates[key].append(hops / seconds)
            cpus[key].append(cpu / hops)
            counts[key].append((statements.count - before) / hops)

    if profiler is not None:
        profiler.dump_stats(args.profile)
    chain_s = statistics.median(chain_times)
    rows = [
        (f"{args.chain} sequential no-op tasks, run start included (median of {args.repeats})",
         f"{chain_s * 1000:.0f} ms"),
        ("  per hop (wall)", f"{chain_s * 1000 / args.chain:.2f} ms"),
        ("  per hop (CPU of this process)", f"{statistics.median(chain_cpu) * 1000:.2f} ms"),
        ("  SQL statements per hop", f"{statistics.median(chain_statements):.1f}"),
    ]
    for key, label in (("fanout", f"{args.fanout}-task fan-out + join"),
                       ("leaves", f"{args.fanout}-task fan-out, no join (bench/engine.py's (c))")):
        rows += [
            (label, f"{statistics.median(rates[key]):.0f} tasks/s"),
            ("  per hop (wall)", f"{1000 / statistics.median(rates[key]):.2f} ms"),
            ("  per hop (CPU of this process)", f"{statistics.median(cpus[key]) * 1000:.2f} ms"),
            ("  SQL statements per hop", f"{statistics.median(counts[key]):.1f}"),
        ]
    width = max(len(r[0]) for r in rows)
    load = os.getloadavg()[0]
    print(f"\nbench/hops.py (PostgreSQL, in-process, live updates "
          f"{'on, null emitter' if args.live else 'off'}"
          f"{', gc.freeze()' if args.gc_freeze else ''}"
          f"{', no pool_pre_ping' if args.no_pre_ping else ''}; load average {load:.1f} "
          f"on {os.cpu_count()} CPUs)")
    print(f"| {'metric'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    print("The wall times include waiting for the CPU: compare runs at a similar load.")


if __name__ == "__main__":
    main()
