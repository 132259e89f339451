"""MCP tool latency over streamable HTTP (issue 14): the SDK's own client against a real
`flask --app app up` (the web process serves /mcp itself), with 200 workflows and
10,000 runs stored.

Run from the repository root::

    .venv/bin/python bench/mcp.py            # about a minute
    .venv/bin/python bench/mcp.py --quick    # fewer calls

What it does: recreates the PostgreSQL database ``apg_mcp_bench`` (``MCP_BENCH_DATABASE_URL``
chooses another whose name contains "bench") and flushes nothing (Redis DB 14,
``MCP_BENCH_REDIS_URL``); creates a team, an Author and an API key with every scope, 200
workflows of 5 tasks with params, one real run and 9,999 more run rows copied from it
(finished, spread over a month), then ANALYZE (as autovacuum would). Then it starts
`flask --app app up --workers 1 --no-scheduler` and times, from this process, N calls
of each tool through one client
session (p50 and p95 in ms), next to two baselines of the same run: ``tools/list`` (the
floor of any MCP request: HTTP, the key, the bridge to the SDK; no tool) and ``GET
/health``; and
``GET /api/v1/runs/`` with the key (the REST list of 10,000 runs).

Targets (AGENTS.md, performance.md): every tool p95 < 200 ms; the REST list p95 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This script's own directory must not be on the path: its name would hide the SDK's
# ``mcp`` package. bench/engine.py is loaded by its path instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _bench_module(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


reset_database = _bench_module("engine").reset_database

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/apg_mcp_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
SECRET_KEY = "apg-mcp-bench-secret-key-0123456789abcdef0123"
WORKFLOWS = 200
RUNS = 10_000
TARGET_TOOL_P95 = 200.0
TARGET_REST_P95 = 50.0


def definition(i: int) -> dict[str, Any]:
    noop = {"type": "noop", "with": {"value": "{{ params.day }}"}}
    tasks = [{"id": "t0", **noop}] + [
        {"id": f"t{j}", **noop, "depends_on": [f"t{j - 1}"]} for j in range(1, 5)]
    return {"name": f"bench-{i:03d}", "description": f"benchmark workflow {i}",
            "params": {"day": {"type": "string", "default": "today"},
                       "limit": {"type": "integer", "default": 10}},
            "tasks": tasks}


def big_definition() -> str:
    """50 tasks as YAML text, with one mistake (workflow_validate's line numbers)."""
    lines = ["name: bench-validate", "tasks:"]
    for j in range(50):
        lines += [f"  - id: t{j:02d}", "    type: noop"]
        if j:
            lines.append(f"    depends_on: [t{j - 1:02d}]")
        lines.append('    with: {value: "{{ run.id }}"}')
    lines.append("    retires: 2")
    return "\n".join(lines) + "\n"


def setup(db_url: str, redis_url: str, instance: Path) -> tuple[str, str]:
    """The data; returns (a run id, the API key)."""
    from flask_migrate import upgrade
    from sqlalchemy import insert, select, text

    from app import create_app, sync_security
    from app.extensions import db
    from app.ids import new_id
    from app.models import Team, TeamMembership, Tenant
    from app.security import api_keys
    from app.security.request import actor_for_user
    from capability import service
    from capability.engine.dispatch import dispatcher_for
    from capability.models import Run
    from capability.runs import service as runs

    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
                      "SECRET_KEY": SECRET_KEY, "INSTANCE_DIR": str(instance),
                      "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        sync_security(app)
        sm = app.extensions["appbuilder"].sm
        tenant = db.session.execute(select(Tenant).where(
            Tenant.name == app.config["DEFAULT_TENANT"])).scalar_one()
        team = Team(name="bench", tenant=tenant)
        db.session.add(team)
        user = sm.add_user(username="agent", first_name="A", last_name="Gent",
                           email="agent@example.com", role=sm.find_role("Author"),
                           password="Bench-password-1")
        db.session.add(TeamMembership(team_id=team.id, user_id=user.id))
        db.session.commit()
        person = actor_for_user(db.session, user)
        ids = [service.create_workflow(db.session, person, "bench",
                                       service.read_source(definition(i))).id
               for i in range(WORKFLOWS)]
        run, _ = runs.start_run(db.session, person, dispatcher_for(app), ids[0],
                                runs.StartRunIn(params={"day": "monday"}))
        row = {c.name: getattr(run, c.key) for c in Run.__table__.columns}
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        copies = []
        for n in range(RUNS - 1):
            at = start + dt.timedelta(seconds=n * 259)
            copies.append({**row, "id": new_id(), "workflow_id": ids[n % WORKFLOWS],
                           "status": "succeeded", "idempotency_key": None, "created_at": at,
                           "started_at": at, "finished_at": at + dt.timedelta(seconds=3)})
        for chunk in range(0, len(copies), 2000):
            db.session.execute(insert(Run), copies[chunk:chunk + 2000])
        db.session.commit()
        # What autovacuum does within a minute of such an insert: without statistics the
        # planner takes 10,000 rows for 5 and sorts them all for a page of the list.
        db.session.execute(text("ANALYZE apg_run"))
        db.session.commit()
        _, token = api_keys.create_key(db.session, person, api_keys.KeyIn(
            name="bench", scopes=["read", "run", "author"]))
        db.session.commit()
        run_id = run.id
        db.session.remove()
    return run_id, token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_up(db_url: str, redis_url: str, instance: Path, log: Path) -> tuple[Any, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "SECRET_KEY": SECRET_KEY, "APG_INSTANCE_DIR": str(instance),
           "ADMIN_PASSWORD": "Bench-admin-1", "LOG_LEVEL": "WARNING",
           "API_KEY_RATE_LIMIT": "1000000 per minute"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "up", "--port", str(port),
         "--workers", "1", "--no-scheduler"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"up ended: see {log}")
        try:
            urllib.request.urlopen(base + "/health", timeout=5).read()
            return proc, base
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"up did not answer: see {log}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(base: str, token: str, run_id: str, n: int) -> dict[str, list[float]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"}
    text = big_definition()
    calls: dict[str, Any] = {
        "workflow_list": {},
        "workflow_get": {"workflow": "bench-100"},
        "workflow_validate": {"definition": text},
        "run_status": {"run_id": run_id},
        "workflow_next": {"run_id": run_id},
    }
    out: dict[str, list[float]] = {"tools/list (baseline)": [], "GET /health (baseline)": [],
                                   "GET /api/v1/runs/ (REST)": []}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            verdict = await client.call_tool("workflow_validate", {"definition": text})
            assert verdict.structured_content["valid"] is False
            for _ in range(5):  # warm up every path
                await client.list_tools(cache_mode="refresh")
                for name, args in calls.items():
                    if name in listed:
                        await client.call_tool(name, args)
            for _ in range(n):
                t0 = time.perf_counter()
                await client.list_tools(cache_mode="refresh")
                out["tools/list (baseline)"].append((time.perf_counter() - t0) * 1000)
                for name, args in calls.items():
                    if name not in listed:
                        continue
                    t0 = time.perf_counter()
                    result = await client.call_tool(name, args)
                    out.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                    assert not result.is_error, result
        for _ in range(n):
            t0 = time.perf_counter()
            (await http.get(f"{base}/health")).raise_for_status()
            out["GET /health (baseline)"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            response = await http.get(f"{base}/api/v1/runs/")
            out["GET /api/v1/runs/ (REST)"].append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, response.text
        count = response.json().get("count")
        assert count == RUNS, count
    return out


def report(figures: dict[str, list[float]]) -> None:
    floor = statistics.median(figures["tools/list (baseline)"])
    print(f"\n{WORKFLOWS} workflows, {RUNS:,} runs; one client session over streamable "
          "HTTP; ms\n")
    print("| call | p50 | p95 | p50 / tools/list | target p95 |\n|---|---:|---:|---:|---|")
    for name, values in figures.items():
        target = (TARGET_REST_P95 if "REST" in name else
                  None if "baseline" in name else TARGET_TOOL_P95)
        p95 = pct(values, 0.95)
        verdict = "" if target is None else f"< {target:.0f}: " + (
            "met" if p95 < target or ("REST" in name and p95 <= target) else "MISSED")
        print(f"| {name} | {statistics.median(values):.1f} | {p95:.1f} | "
              f"{statistics.median(values) / floor:.1f}x | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 calls of each, not 300")
    args = parser.parse_args()
    import anyio

    db_url = reset_database(os.environ.get("MCP_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                            marker="bench")
    redis_url = os.environ.get("MCP_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    instance = Path(tempfile.mkdtemp(prefix="apg-mcp-bench-"))
    t0 = time.monotonic()
    run_id, token = setup(db_url, redis_url, instance)
    print(f"setup: {time.monotonic() - t0:.1f} s")
    proc, base = start_up(db_url, redis_url, instance, instance / "up.log")
    try:
        figures = anyio.run(measure, base, token, run_id, 50 if args.quick else 300)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    report(figures)


if __name__ == "__main__":
    main()
