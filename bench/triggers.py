"""Triggers (issue 12): how fast due ticks become runs, and webhook deliveries become runs.

Run from the repository root::

    .venv/bin/python bench/triggers.py            # about a minute
    .venv/bin/python bench/triggers.py --schedules 200 --senders 10 --deliveries 200

(a) 1,000 schedules fall due on the same second of the real clock (a 6-field cron
    naming it, a few seconds ahead); 2 real scheduler processes (``python -m app
    scheduler``) decide them. Measured: when each run is first seen committed by a
    reader polling every 20 ms, from the due second (p50/p99), and the ticks decided
    per second. Target: p99 ≤ 1 s.
(b) A webhook (hmac-sha256) receives signed deliveries from 50 concurrent senders
    through the web process of ``flask --app app up`` (Werkzeug, threaded, its request
    handler; a process of its own, as in production): the time from sending to the 202
    (the run committed), p50/p99, target p99 ≤ 100 ms. Twice: paced (each sender sends
    every ``--period`` seconds, 1 s: 50 deliveries a second in all, phases spread), the
    target's load; then flat out (each sends the next as soon as the last is answered),
    which measures capacity: there the latency is the queue, 50 / throughput. Baseline
    in the same run for both: ``GET /health`` under the same senders.

It recreates the PostgreSQL database ``apg_triggers_bench`` (``TRIGGERS_DATABASE_URL``
chooses another whose name contains "bench") and flushes Redis DB 11.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from engine import reset_database  # noqa: E402  (bench/engine.py, next to this script)
from hops import SECRET_KEY, build_app  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/apg_triggers_bench"
REDIS_URL = "redis://127.0.0.1:6379/11"
# Seconds between the schedules' creation and their due second: the schedulers start
# and settle meanwhile.
LEAD = 12


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def setup(app: Any) -> tuple[str, str]:
    """A team, a workflow and a webhook on it: (workflow id, webhook url)."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Team, Tenant
    from app.security.actor import SYSTEM
    from capability import service
    from capability.secrets import service as secrets
    from capability.triggers import webhooks

    with app.app_context():
        tenant = db.session.execute(select(Tenant).where(
            Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one()
        db.session.add(Team(name="bench", tenant=tenant))
        db.session.commit()
        wid = service.create_workflow(db.session, SYSTEM, "bench", service.read_source(
            {"name": "bench-trigger", "tasks": [{"id": "a", "type": "noop"}]})).id
        # hmac-sha256 needs a team secret: stored through the service, as a user would.
        secrets.create_secret(db.session, SYSTEM, app.config, secrets.SecretIn(
            team="bench", name="bench_hook", value="bench-hook-secret"))
        data = webhooks.WebhookIn(workflow_id=wid, name="bench", signature={
            "scheme": "hmac-sha256", "secret": "bench_hook"})
        _, token = webhooks.create_webhook(db.session, SYSTEM, data)
        db.session.remove()
    return wid, f"/hooks/{token}"


def add_schedules(app: Any, wid: str, schedules: int, due: dt.datetime) -> None:
    """``schedules`` schedules of the workflow, all due at the real instant ``due`` (a
    6-field cron naming its second, minute and hour, UTC)."""
    from app.extensions import db
    from app.ids import new_id
    from app.security.actor import SYSTEM
    from capability.triggers import service as schedules_service
    from capability.triggers.models import Schedule
    from capability.triggers.ticker import next_due

    cron = f"{due.second} {due.minute} {due.hour} * * *"
    with app.app_context():
        body = schedules_service.ScheduleIn(workflow_id=wid, cron=cron, overlap="allow")
        first = schedules_service.create_schedule(db.session, SYSTEM, body)
        # The rest in bulk: the same row, new ids (the service makes one at a time).
        rows = [{c.name: getattr(first, c.name) for c in Schedule.__table__.columns
                 if c.name != "id"} for _ in range(schedules - 1)]
        for row in rows:
            row["id"] = new_id()
        if rows:
            db.session.execute(Schedule.__table__.insert(), rows)
        db.session.commit()
        assert next_due(first, due - dt.timedelta(seconds=1)) == due
        db.session.remove()


def ticks_bench(app: Any, db_url: str, wid: str, schedules: int,
                workdir: Path) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from app.extensions import db
    from capability.models import Run

    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": REDIS_URL,
           "SECRET_KEY": SECRET_KEY, "APG_INSTANCE_DIR": str(workdir),
           "TEAM_RUN_RATE": "0", "TEAM_MAX_ACTIVE_RUNS": "0", "LOG_LEVEL": "WARNING",
           "APG_SYNC_SECURITY": "0"}
    env.pop("TRIGGERS_CLOCK_FILE", None)
    # The real clock: every schedule falls due on one second, a few seconds after the
    # schedulers are up and idle.
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEAD)).replace(microsecond=0)
    add_schedules(app, wid, schedules, due)
    procs = [subprocess.Popen([sys.executable, "-m", "app", "scheduler"], cwd=ROOT, env=env,
                              stdout=(workdir / f"scheduler-{i}.log").open("wb"),
                              stderr=subprocess.STDOUT) for i in range(2)]
    seen: dict[str, float] = {}  # run id -> when this process first saw it committed
    try:
        left = (due - dt.datetime.now(dt.UTC)).total_seconds()
        assert left > 3, f"the schedulers started too late ({left:.1f} s before due)"
        with app.app_context():
            deadline = time.monotonic() + left + 120
            while len(seen) < schedules and time.monotonic() < deadline:
                ids = db.session.execute(select(Run.id).where(
                    Run.trigger == "schedule")).scalars().all()
                db.session.rollback()
                now = dt.datetime.now(dt.UTC).timestamp()
                for run_id in ids:
                    seen.setdefault(run_id, now)
                time.sleep(0.02)
            db.session.remove()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    delays = [at - due.timestamp() for at in seen.values()]
    span = max(delays) if delays else float("nan")
    return [
        (f"(a) {schedules} schedules due at once, 2 schedulers: runs created",
         f"{len(seen)}", f"of {schedules}; every tick once"),
        ("(a) ticks decided per second", f"{len(seen) / span:.0f}/s" if span > 0 else "-",
         f"all committed {span:.2f} s after the due second"),
        ("(a) due -> run committed (seen by a reader), p50 / p99",
         f"{pct(delays, 0.5) * 1000:.0f} / {pct(delays, 0.99) * 1000:.0f} ms",
         "target p99 ≤ 1000 ms"),
    ]


def serve(db_url: str, workdir: Path, port_file: Path) -> None:
    """The web process of ``flask --app app up`` (Werkzeug, threaded, its request
    handler), on a free port written to ``port_file``; until SIGTERM."""
    from werkzeug.serving import make_server

    from app.runtime.up import AccessLogRequestHandler

    app = build_app(db_url, REDIS_URL, workdir, live=False, migrate=False)
    app.config.update(WEBHOOK_RATE_LIMIT=0, TEAM_RUN_RATE=0, TEAM_MAX_ACTIVE_RUNS=0)
    server = make_server("127.0.0.1", 0, app, threaded=True,
                         request_handler=AccessLogRequestHandler)
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown() or sys.exit(0))
    port_file.write_text(str(server.server_port))
    server.serve_forever()


def webhook_bench(db_url: str, workdir: Path, url: str, senders: int, deliveries: int,
                  period: float) -> list[tuple[str, str]]:
    import requests

    port_file = workdir / "port"
    server = subprocess.Popen([sys.executable, __file__, "--serve", db_url, str(workdir)],
                              cwd=ROOT, stdout=(workdir / "web.log").open("wb"),
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not port_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port_file.read_text()}"
    local = threading.local()
    numbers = iter(range(10**9))
    lock = threading.Lock()

    def http() -> Any:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        return local.s

    def deliver() -> float:
        with lock:
            i = next(numbers)
        body = json.dumps({"n": i}).encode()
        sig = hmac.new(b"bench-hook-secret", body, hashlib.sha256).hexdigest()
        t = time.perf_counter()
        r = http().post(base + url, data=body, headers={
            "Content-Type": "application/json", "X-Signature": sig,
            "Idempotency-Key": f"bench-{i}"}, timeout=60)
        took = time.perf_counter() - t
        assert r.status_code == 202, (r.status_code, r.text[:200])
        return took

    def health() -> float:
        t = time.perf_counter()
        r = http().get(base + "/health", timeout=60)
        assert r.status_code in (200, 503)
        return time.perf_counter() - t

    def paced(call: Any, each: int) -> list[float]:
        """``senders`` senders, each calling every ``period`` seconds (their phases
        spread over the period), ``each`` times."""
        def sender(k: int) -> list[float]:
            start = time.monotonic() + period * k / senders
            out = []
            for n in range(each):
                time.sleep(max(0.0, start + n * period - time.monotonic()))
                out.append(call())
            return out
        with ThreadPoolExecutor(senders) as pool:
            return [t for ts in pool.map(sender, range(senders)) for t in ts]

    def flat_out(call: Any, total: int) -> tuple[list[float], float]:
        """``senders`` senders, each sending the next as soon as the last is answered."""
        with ThreadPoolExecutor(senders) as pool:
            started = time.perf_counter()
            times = list(pool.map(lambda _: call(), range(total)))
            return times, time.perf_counter() - started

    try:
        paced(deliver, 2)  # warm: connections, caches, the first import of each module
        each = max(1, deliveries // senders)
        rate = senders / period
        hooks = paced(deliver, each)
        base_paced = paced(health, each)
        hooks_flat, wall = flat_out(deliver, deliveries)
        base_flat, _ = flat_out(health, deliveries)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    def p(values: list[float]) -> str:
        return f"{pct(values, 0.5) * 1000:.0f} / {pct(values, 0.99) * 1000:.0f} ms"

    return [
        (f"(b) webhook -> run created, {senders} senders at {rate:.0f}/s, p50 / p99",
         p(hooks), f"target p99 ≤ 100 ms; each sender every {period:g} s, {len(hooks)} sent"),
        (f"(b) baseline: GET /health, {senders} senders at {rate:.0f}/s, p50 / p99",
         p(base_paced), "same server, same pace"),
        (f"(b) webhook, {senders} senders flat out (capacity), p50 / p99", p(hooks_flat),
         f"{deliveries / wall:.0f} deliveries/s: each sender waits for the one before it"),
        (f"(b) baseline: GET /health, {senders} senders flat out, p50 / p99", p(base_flat),
         "same server, same load"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--period", type=float, default=1.0,
                        help="seconds between two deliveries of one sender (paced part)")
    parser.add_argument("--serve", nargs=2, metavar=("DATABASE_URL", "DIR"),
                        help=argparse.SUPPRESS)  # the web process (b) starts
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]), Path(args.serve[1]) / "port")
        return
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="apg-triggers-bench-"))
    os.environ["APG_INSTANCE_DIR"] = str(workdir)
    db_url = reset_database(os.environ.get("TRIGGERS_DATABASE_URL") or DEFAULT_DATABASE_URL,
                            marker="bench")
    app = build_app(db_url, REDIS_URL, workdir, live=False)
    wid, url = setup(app)
    rows = ticks_bench(app, db_url, wid, args.schedules, workdir)
    rows += webhook_bench(db_url, workdir, url, args.senders, args.deliveries, args.period)
    width = max(len(r[0]) for r in rows)
    print(f"\nbench/triggers.py (PostgreSQL, Redis; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; logs in {workdir})")
    print(f"| {'metric'.ljust(width)} | value | notes |")
    print(f"|{'-' * (width + 2)}|-------|-------|")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value} | {note} |")


if __name__ == "__main__":
    main()
