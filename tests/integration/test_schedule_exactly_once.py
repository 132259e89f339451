"""Three scheduler processes against one database decide 1,000 ticks of a once-a-second
schedule exactly once, none missed, while one of them is SIGKILLed mid-pass
(TRIGGERS.md, "Exactly once"). The clock is the file the processes read
(``TRIGGERS_CLOCK_FILE``), moved 50 s at a time: every tick is on time."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from app.extensions import db
from capability.models import Run
from capability.triggers import clock
from capability.triggers.models import ScheduleTick
from tests.support.engine import child_env, spawned
from tests.support.runs import make, wait_for

UTC = dt.UTC
TICKS = 1000
STEP = 50  # seconds the clock moves at a time (under the ticker's 60 s of grace)


def _decided(app: Flask, sid: str) -> int:
    with app.app_context():
        try:
            return int(db.session.execute(select(func.count()).select_from(ScheduleTick).where(
                ScheduleTick.schedule_id == sid)).scalar_one())
        finally:
            db.session.remove()


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _deciding(app: Flask, schedulers: list[Any]) -> Any:
    """The scheduler inside a write transaction now (deciding ticks), if any."""
    with app.app_context():
        try:
            busy = set(db.session.execute(text(
                "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()")).scalars())
        finally:
            db.session.remove()
    return next((p for p in schedulers if busy & _local_ports(p.pid)), None)


def test_three_schedulers_decide_each_tick_once_even_when_one_is_killed(
        app: Flask, client: FlaskClient, op: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = dt.datetime(2027, 5, 3, 12, 0, 0, 500000, tzinfo=UTC)
    now_file = tmp_path / "now"
    now_file.write_text(t0.isoformat())
    monkeypatch.setenv(clock.ENV, str(now_file))
    wid = make(client, op, [{"id": "a", "type": "noop"}])
    r = client.post("/api/v1/schedules/", headers=op["h"], json={
        "workflow_id": wid, "cron": "* * * * * *", "overlap": "allow", "catchup": "all"})
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["id"]
    env = child_env(app, APG_SYNC_SECURITY="0", TEAM_RUN_RATE="0", TEAM_MAX_ACTIVE_RUNS="0",
                    **{clock.ENV: str(now_file)})
    killed = None
    with spawned(tmp_path, [sys.executable, "-m", "flask", "--app", "app"], env) as spawn:
        schedulers = [spawn("scheduler") for _ in range(3)]
        for step in range(1, TICKS // STEP + 1):
            now_file.write_text((t0 + dt.timedelta(seconds=step * STEP)).isoformat())
            if step == TICKS // STEP // 2:
                # Mid-pass: on PostgreSQL the one seen inside its write transaction; on
                # SQLite (no server to ask) the first, once this step's pass is under way.
                if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
                    killed = wait_for(lambda: _deciding(app, schedulers), 30,
                                      "no scheduler was seen deciding", step=0.005)
                else:
                    wait_for(lambda step=step: _decided(app, sid) > (step - 1) * STEP, 30,
                             "no scheduler started the pass", step=0.005)
                    killed = schedulers[0]
                os.kill(killed.pid, signal.SIGKILL)
                killed.wait()
            wait_for(lambda step=step: _decided(app, sid) >= step * STEP, 90,
                     f"the ticks of step {step} were not all decided")
        time.sleep(2)  # every scheduler makes at least one more pass: nothing is added
        assert sum(p.poll() is None for p in schedulers) == 2
    assert killed is not None and killed.returncode == -signal.SIGKILL
    with app.app_context():
        ledger = list(db.session.execute(select(ScheduleTick).where(
            ScheduleTick.schedule_id == sid).order_by(ScheduleTick.scheduled_for)).scalars())
        runs = list(db.session.execute(select(Run).where(Run.trigger_source_id == sid)
                                       ).scalars())
        db.session.remove()
    expected = [t0.replace(microsecond=0) + dt.timedelta(seconds=s)
                for s in range(1, TICKS + 1)]
    assert [t.scheduled_for for t in ledger] == expected  # none missed, none twice
    assert {t.outcome for t in ledger} == {"fired"}
    assert len(runs) == TICKS
    assert sorted(r.scheduled_for for r in runs) == expected
    assert {t.run_id for t in ledger} == {r.id for r in runs}
    assert {r.trigger for r in runs} == {"schedule"}
