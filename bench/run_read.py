"""How fast a run starts and shows, in one process on PostgreSQL (no RQ): issue 11, item 19.

Run from the repository root::

    .venv/bin/python bench/run_read.py            # about two minutes
    .venv/bin/python bench/run_read.py --quick    # smaller repeats

What it does: recreates the PostgreSQL database ``apg_hops`` (as ``bench/hops.py``:
``HOPS_DATABASE_URL`` chooses another whose name contains "hops"), creates an Admin and
three workflows, and times requests through the app's test client (the whole Flask
stack: authentication, the service, JSON or the template; no network, no WSGI server):

* ``GET /api/v1/runs/<id>`` of a finished 41-task chain (p50, idle) and its SQL statements,
  next to two baselines of the same run: an authenticated ``GET`` answered 404 (the
  token, the user, the teams, one lookup: the floor of any API call) and ``/health``;
* ``POST /api/v1/workflows/<id>/runs`` (p50) of that chain, of a 5,000-element
  ``for_each`` and of a 1,000-task DAG (root, 998 leaves, a join);
* the run's JSON and the run's page (``GET /runs/<id>``), p95, for the 5,000-element and
  the 1,000-task runs, while running (half their tasks or elements done) and after.

Sends go to an in-memory FIFO and are handled by the real ``jobs.run_attempt`` (as in
``bench/hops.py``); live updates are off. Targets (performance.md): GET of the chain
≤ 5 ms p50, a start ≤ 20 ms p50 whatever the fan-out, JSON and page ≤ 500 ms p95.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from hops import (  # noqa: E402  (bench/hops.py, next to this script)
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    Statements,
    build_app,
    fifo_for,
    reset_database,
)

PASSWORD = "Bench-password-1"
ELEMENTS = 5000
DAG = 1000


def definitions() -> dict[str, dict[str, Any]]:
    noop = {"type": "noop"}
    chain = [{"id": "t000", **noop}] + [
        {"id": f"t{i:03d}", **noop, "depends_on": [f"t{i - 1:03d}"]} for i in range(1, 41)]
    leaves = [f"f{i:04d}" for i in range(DAG - 2)]
    dag = [{"id": "root", **noop}, *({"id": leaf, **noop, "depends_on": ["root"]}
                                     for leaf in leaves),
           {"id": "join", **noop, "depends_on": leaves}]
    each = [{"id": "each", **noop, "for_each": list(range(ELEMENTS)),
             "with": {"value": "{{ item }}"}}]
    return {"chain": {"name": "read-chain-41", "tasks": chain},
            "dag": {"name": f"read-dag-{DAG}", "tasks": dag},
            "each": {"name": f"read-each-{ELEMENTS}", "tasks": each}}


def setup(app: Any) -> dict[str, str]:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Team, Tenant
    from app.security.actor import SYSTEM
    from capability import service

    with app.app_context():
        sm = app.extensions["appbuilder"].sm
        sm.add_user(username="bench", first_name="Bench", last_name="Admin",
                    email="bench@example.com", role=sm.find_role("Admin"), password=PASSWORD)
        tenant = db.session.execute(
            select(Tenant).where(Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one()
        db.session.add(Team(name="read", tenant=tenant))
        db.session.commit()
        ids = {key: service.create_workflow(db.session, SYSTEM, "read",
                                            service.read_source(d)).id
               for key, d in definitions().items()}
        db.session.remove()
    return ids


def timed(call: Callable[[], Any], times: int) -> list[float]:
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reads, starts = (20, 10) if args.quick else (50, 20)

    from app.extensions import db
    from capability import api as workflow_api
    from capability.engine import jobs

    db_url = reset_database(os.environ.get("HOPS_DATABASE_URL", DEFAULT_DATABASE_URL))
    instance = Path(tempfile.mkdtemp(prefix="apg-read-"))
    app = build_app(db_url, os.environ.get("HOPS_REDIS_URL", DEFAULT_REDIS_URL), instance,
                    live=False)
    app.config["WTF_CSRF_ENABLED"] = False
    ids = setup(app)
    with app.app_context():
        fifo = fifo_for(app)
        statements = Statements(db.engine)
    jobs._dispatcher = lambda: fifo  # type: ignore[assignment]
    jobs._worker_name = lambda: "bench"  # type: ignore[assignment]
    workflow_api.dispatcher_for = lambda app, **kw: fifo  # type: ignore[assignment]

    client = app.test_client()
    token = client.post("/api/v1/security/login", json={
        "username": "bench", "password": PASSWORD, "provider": "db"}).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    browser = app.test_client()
    assert browser.post("/login/", data={"username": "bench", "password": PASSWORD}
                        ).status_code == 302

    def start(key: str) -> str:
        r = client.post(f"/api/v1/workflows/{ids[key]}/runs", headers=headers, json={})
        assert r.status_code == 201, r.get_data(as_text=True)[:300]
        return str(r.get_json()["id"])

    def work(limit: int | None = None) -> None:
        done = 0
        with app.app_context():
            while fifo.items and (limit is None or done < limit):
                item = fifo.items.popleft()
                jobs.run_attempt(item.attempt_id, item.instant)
                done += 1

    def get(url: str, who: Any, status: int = 200, **kw: Any) -> Callable[[], Any]:
        def call() -> Any:
            r = who.get(url, **kw)
            assert r.status_code == status, (url, r.status_code)
            return r
        return call

    rows: list[tuple[str, str, str]] = []
    # (1) GET of a finished 41-task chain, idle.
    chain = start("chain")
    work()
    api = get(f"/api/v1/runs/{chain}", client, headers=headers)
    api()
    before = statements.count
    api()
    per_get = statements.count - before
    rows.append(("GET a 41-task run, p50 idle", f"{p(timed(api, reads), 0.5):.1f} ms",
                 f"≤ 5 ms; {per_get} SQL statements"))
    # The floor under it, same run: what any authenticated call costs (a 404 after the
    # token, the user, the teams and one lookup), and an unauthenticated one.
    missing = get("/api/v1/secrets/999999999", client, 404, headers=headers)
    missing()
    before = statements.count
    missing()
    per_404 = statements.count - before
    rows.append(("  baseline: an authenticated 404, p50", f"{p(timed(missing, reads), 0.5):.1f} ms",
                 f"{per_404} SQL statements"))
    health = get("/health", client)
    rows.append(("  baseline: GET /health (no login), p50",
                 f"{p(timed(health, reads), 0.5):.1f} ms", "no statement of the app's"))
    # (2) Starts, whatever the fan-out (the sends a start makes are dropped).
    for key, label in (("chain", "41-task chain"), ("each", f"{ELEMENTS}-element for_each"),
                       ("dag", f"{DAG}-task DAG")):
        def one(key: str = key) -> None:
            start(key)
            fifo.items.clear()
        rows.append((f"POST a run ({label}), p50", f"{p(timed(one, starts), 0.5):.1f} ms",
                     "≤ 20 ms"))
    # (3) Large runs: JSON and page, while running and after.
    for key, label, half in (("each", f"{ELEMENTS}-element for_each", ELEMENTS // 2 + 1),
                             ("dag", f"{DAG}-task DAG", DAG // 2)):
        run_id = start(key)
        work(half)
        for when in ("while running", "after"):
            json_call = get(f"/api/v1/runs/{run_id}", client, headers=headers)
            page_call = get(f"/runs/{run_id}", browser)
            size = len(json_call().get_data()), len(page_call().get_data())
            rows.append((f"run JSON, {label}, {when}, p95",
                         f"{p(timed(json_call, reads // 2), 0.95):.0f} ms",
                         f"≤ 500 ms; {size[0] / 1024:.0f} KiB"))
            rows.append((f"run page, {label}, {when}, p95",
                         f"{p(timed(page_call, reads // 2), 0.95):.0f} ms",
                         f"≤ 500 ms; {size[1] / 1024:.0f} KiB"))
            if when == "while running":
                work()

    width = max(len(r[0]) for r in rows)
    print(f"\nbench/run_read.py (PostgreSQL, in-process test client; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"| {'metric'.ljust(width)} | value | target, notes |")
    print(f"|{'-' * (width + 2)}|-------|---------------|")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value} | {note} |")
    print("The wall times include waiting for the CPU: compare runs at a similar load.")


if __name__ == "__main__":
    main()
