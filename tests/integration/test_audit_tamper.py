"""The audit chain against someone who can write the database: the database superuser
rewrites an event and recomputes the chain as plain SHA-256 (without AUDIT_KEY), or
deletes the newest events and moves the head back. ``audit verify`` must fail with a
clear message and exit 1; checkpoints outside the database catch the truncation."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select

from app import InsecureConfiguration, create_app
from app.audit import chain
from app.audit.models import AuditEvent, AuditHead
from app.extensions import db
from tests.support.app import make_config
from tests.support.engine import child_env, spawned

COLUMNS = (*chain.HASHED_FIELDS, "hash")


class Superuser:
    """A DB-API connection of its own, outside the app, with the append-only triggers
    out of the way: PostgreSQL's superuser (``session_replication_role``), or whoever
    can write the SQLite file."""

    def __init__(self, url: str) -> None:
        parsed = sa.engine.make_url(url)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        if self.sqlite:
            self.conn: Any = sqlite3.connect(parsed.database or "")
            cur = self.conn.cursor()
            cur.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                        "AND tbl_name = 'apg_audit_event'")
            self.triggers = [row[0] for row in cur.fetchall()]
            for sql in self.triggers:
                cur.execute("DROP TRIGGER " + sql.split()[2])
        else:
            import psycopg2

            self.conn = psycopg2.connect(
                host=parsed.host, port=parsed.port, user=parsed.username,
                password=parsed.password, dbname=parsed.database)
            cur = self.conn.cursor()
            cur.execute("SHOW is_superuser")
            assert cur.fetchone()[0] == "on", "the attack needs the database superuser"
            cur.execute("SET session_replication_role = replica")  # no user triggers

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.conn.cursor().execute(sql.replace("%s", "?") if self.sqlite else sql, params)

    def close(self) -> None:
        self.conn.commit()
        if self.sqlite:
            for sql in self.triggers:
                self.conn.execute(sql)
            self.conn.commit()
        self.conn.close()


@contextmanager
def superuser(app: Flask) -> Iterator[Superuser]:
    su = Superuser(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        yield su
    finally:
        su.close()


def rows(app: Flask, since: int = 0) -> list[dict[str, Any]]:
    with app.app_context():
        found = db.session.execute(
            select(*[getattr(AuditEvent, n) for n in COLUMNS])
            .where(AuditEvent.seq >= since).order_by(AuditEvent.seq)).mappings().all()
        db.session.rollback()
        return [dict(r) for r in found]


def set_chain(su: Superuser, changed: list[dict[str, Any]]) -> None:
    """Write ``actor``, ``prev_hash`` and ``hash`` of these rows, and the head after them."""
    for row in changed:
        su.run("UPDATE apg_audit_event SET actor = %s, prev_hash = %s, hash = %s "
               "WHERE seq = %s", (row["actor"], row["prev_hash"], row["hash"], row["seq"]))
    su.run("UPDATE apg_audit_head SET seq = %s, hash = %s WHERE id = 1",
           (changed[-1]["seq"], changed[-1]["hash"]))


@pytest.fixture()
def cli(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`flask --app app audit ...`, with checkpoints in a directory of this test."""
    monkeypatch.setitem(app.config, "AUDIT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["audit", *args])


def test_a_rewritten_event_with_the_chain_recomputed_is_detected(app, factory, cli):
    for _ in range(3):
        factory.tenant()
    assert cli("verify").exit_code == 0
    original = rows(app)
    victim = original[-2]
    forged = []
    prev = original[-3]["hash"]
    for row in original[-2:]:  # what an attacker does: edit, then re-hash to the end
        row = {**row, "prev_hash": prev}
        if row["seq"] == victim["seq"]:
            row["actor"] = "mallory"
        row["hash"] = prev = chain.compute_hash(row)  # plain SHA-256: the old chain
        forged.append(row)
    with superuser(app) as su:
        set_chain(su, forged)
    try:
        result = cli("verify")
        assert result.exit_code == 1, result.output
        assert f"BROKEN at event #{victim['seq']} ({victim['id']})" in result.output
        assert "does not match its MAC: the event was rewritten" in result.output
    finally:
        with superuser(app) as su:
            set_chain(su, original[-2:])
    assert cli("verify").exit_code == 0


def test_removing_the_newest_events_below_a_checkpoint_is_detected(app, factory, cli, tmp_path):
    for _ in range(3):
        factory.tenant()
    made = cli("checkpoint")
    assert made.exit_code == 0, made.output
    original = rows(app)
    head = original[-1]
    assert f"event #{head['seq']}" in made.output
    line = json.loads((tmp_path / "checkpoints").glob("*.jsonl").__next__().read_text())
    assert (line["seq"], line["mac"]) == (head["seq"], head["hash"])
    assert cli("verify").exit_code == 0

    removed, kept = original[-2:], original[-3]
    with superuser(app) as su:
        su.run("DELETE FROM apg_audit_event WHERE seq > %s", (kept["seq"],))
        su.run("UPDATE apg_audit_head SET seq = %s, hash = %s WHERE id = 1",
               (kept["seq"], kept["hash"]))
    try:
        # The database alone holds a consistent shorter chain...
        alone = cli("verify", "--checkpoints", str(tmp_path / "empty"))
        assert alone.exit_code == 1 and "is not a directory" in alone.output
        (tmp_path / "empty").mkdir()
        assert cli("verify", "--checkpoints", str(tmp_path / "empty")).exit_code == 0
        # ...which the checkpoint written outside it does not match.
        result = cli("verify")
        assert result.exit_code == 1, result.output
        assert (f"the chain ends at #{kept['seq']} but the checkpoint at checkpoints-"
                in result.output)
        assert f"records #{head['seq']}: events were removed" in result.output
    finally:
        _restore(app, removed)
    assert cli("verify").exit_code == 0


def _restore(app: Flask, removed: list[dict[str, Any]]) -> None:
    """Put the deleted events back as they were (through the app's engine, which may
    insert) and the head on the newest one."""
    with app.app_context():
        conn = db.session.connection()
        conn.execute(sa.insert(AuditEvent), removed)
        conn.execute(sa.update(AuditHead).where(AuditHead.id == chain.HEAD_ID)
                     .values(seq=removed[-1]["seq"], hash=removed[-1]["hash"]))
        db.session.commit()


def test_a_chain_without_the_key_marker_or_under_another_key_fails(app, factory, cli,
                                                                    monkeypatch):
    factory.tenant()
    monkeypatch.setitem(app.config, "AUDIT_KEY", "another-key-of-at-least-32-characters!")
    result = cli("verify")
    assert result.exit_code == 1
    assert "event #1 " in result.output and "AUDIT_KEY is not the key" in result.output
    monkeypatch.delitem(app.config, "AUDIT_KEY")
    with app.app_context():
        marker = db.session.execute(select(AuditEvent).where(AuditEvent.seq == 1)).scalar_one()
        assert (marker.action, marker.actor) == (chain.KEYED_ACTION, "system")
        db.session.rollback()


def test_outside_development_audit_key_is_required(service_urls):
    with pytest.raises(InsecureConfiguration, match="AUDIT_KEY is not set"):
        create_app(make_config(service_urls, APG_ENV="production"))
    with pytest.raises(InsecureConfiguration, match="AUDIT_KEY must be at least 32"):
        create_app(make_config(service_urls, AUDIT_KEY="short"))


def test_the_scheduler_writes_checkpoints(app, factory, tmp_path):
    factory.tenant()
    folder = tmp_path / "from-scheduler"
    env = child_env(app, APG_SYNC_SECURITY="0", AUDIT_CHECKPOINT_DIR=str(folder),
                    AUDIT_CHECKPOINT_INTERVAL="1")
    with spawned(tmp_path, [sys.executable, "-m", "app"], env) as spawn:
        proc = spawn("scheduler")
        # Only the holder of the queue locks maintains: a holder killed by an earlier
        # test keeps them until they expire.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not list(folder.glob("*.jsonl")):
            assert proc.poll() is None, (tmp_path / "scheduler-0.log").read_text()
            time.sleep(0.2)
    files = list(folder.glob("*.jsonl"))
    assert files, (tmp_path / "scheduler-0.log").read_text()
    first = json.loads(files[0].read_text().splitlines()[0])
    newest = rows(app)[-1]
    assert first["seq"] <= newest["seq"] and first["mac"] in {r["hash"] for r in rows(app)}
