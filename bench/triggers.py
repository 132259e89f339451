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
    through a real HTTP server (Werkzeug, threaded, in this process): the time from
    sending to the 202 (the run committed) p50/p99; target p99 ≤ 100 ms. Baseline in the
    same run: ``GET /health`` under the same 50 senders.

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


def webhook_bench(app: Any, url: str, senders: int, deliveries: int) -> list[tuple[str, str]]:
    import requests
    from werkzeug.serving import make_server

    app.config["WEBHOOK_RATE_LIMIT"] = 0
    app.config["TEAM_RUN_RATE"] = 0
    app.config["TEAM_MAX_ACTIVE_RUNS"] = 0
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    session_local = threading.local()

    def http() -> Any:
        if not hasattr(session_local, "s"):
            session_local.s = requests.Session()
        return session_local.s

    def deliver(i: int) -> float:
        body = json.dumps({"n": i}).encode()
        sig = hmac.new(b"bench-hook-secret", body, hashlib.sha256).hexdigest()
        t = time.perf_counter()
        r = http().post(base + url, data=body, headers={
            "Content-Type": "application/json", "X-Signature": sig,
            "Idempotency-Key": f"bench-{i}"}, timeout=30)
        took = time.perf_counter() - t
        assert r.status_code == 202, (r.status_code, r.text[:200])
        return took

    def health(_: int) -> float:
        t = time.perf_counter()
        r = http().get(base + "/health", timeout=30)
        assert r.status_code in (200, 503)
        return time.perf_counter() - t

    try:
        with ThreadPoolExecutor(senders) as pool:
            list(pool.map(deliver, range(-senders, 0)))  # warm: connections, caches
            started = time.perf_counter()
            times = list(pool.map(deliver, range(deliveries)))
            wall = time.perf_counter() - started
            base_times = list(pool.map(health, range(deliveries)))
    finally:
        server.shutdown()
    return [
        (f"(b) webhook -> run created, {senders} senders, p50 / p99",
         f"{pct(times, 0.5) * 1000:.0f} / {pct(times, 0.99) * 1000:.0f} ms",
         f"target p99 ≤ 100 ms; {deliveries / wall:.0f} deliveries/s"),
        (f"(b) baseline: GET /health, {senders} senders, p50 / p99",
         f"{pct(base_times, 0.5) * 1000:.0f} / {pct(base_times, 0.99) * 1000:.0f} ms",
         "same server, same load"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=1000)
    args = parser.parse_args()
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="apg-triggers-bench-"))
    os.environ["APG_INSTANCE_DIR"] = str(workdir)
    db_url = reset_database(os.environ.get("TRIGGERS_DATABASE_URL") or DEFAULT_DATABASE_URL,
                            marker="bench")
    app = build_app(db_url, REDIS_URL, workdir, live=False)
    wid, url = setup(app)
    rows = ticks_bench(app, db_url, wid, args.schedules, workdir)
    rows += webhook_bench(app, url, args.senders, args.deliveries)
    width = max(len(r[0]) for r in rows)
    print(f"\nbench/triggers.py (PostgreSQL, Redis; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; logs in {workdir})")
    print(f"| {'metric'.ljust(width)} | value | notes |")
    print(f"|{'-' * (width + 2)}|-------|-------|")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value} | {note} |")


if __name__ == "__main__":
    main()
