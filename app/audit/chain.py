"""Appending to the hash chain and checking it.

Each event's hash covers its own fields and the previous event's hash, so changing,
removing or reordering any stored event breaks every hash after it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from app.audit.models import AuditEvent, AuditHead
from app.ids import new_id

GENESIS_HASH = "0" * 64
HEAD_ID = 1
HASHED_FIELDS = (
    "id", "seq", "at", "tenant", "actor", "action", "target_type", "target_id", "team",
    "outcome", "ip", "request_id", "before", "after", "prev_hash",
)


def _canonical_time(value: dt.datetime) -> str:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def compute_hash(fields: dict[str, Any]) -> str:
    material = {name: fields.get(name) for name in HASHED_FIELDS}
    material["at"] = _canonical_time(fields["at"])
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _lock_head(conn: Connection) -> tuple[int, str]:
    """Take the chain's lock for the rest of the transaction and read its head."""
    # A no-op UPDATE locks the row on PostgreSQL and takes the database write lock on
    # SQLite before we read, so the read sees the true head: in the same statement
    # where the database can return what it updated (every audited write pays this).
    lock = update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=AuditHead.seq)
    if conn.dialect.update_returning:
        head = conn.execute(lock.returning(AuditHead.seq, AuditHead.hash)).first()
        if head is not None:
            return int(head[0]), str(head[1])
    elif conn.execute(lock).rowcount:
        head = conn.execute(
            select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
        ).one()
        return int(head[0]), str(head[1])
    conn.execute(insert(AuditHead).values(id=HEAD_ID, seq=0, hash=GENESIS_HASH))
    return 0, GENESIS_HASH


def append(conn: Connection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chain and insert ``events`` inside the caller's transaction; returns the rows."""
    if not events:
        return []
    seq, prev = _lock_head(conn)
    rows = []
    for event in events:
        seq += 1
        row = {name: event.get(name) for name in HASHED_FIELDS}
        row["id"] = event.get("id") or new_id()
        row["seq"] = seq
        row["at"] = event.get("at") or dt.datetime.now(dt.UTC)
        row["prev_hash"] = prev
        prev = row["hash"] = compute_hash(row)
        rows.append(row)
    conn.execute(insert(AuditEvent), rows)
    conn.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=seq, hash=prev))
    return rows


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    broken_id: str | None = None
    reason: str = ""


def _rows(conn: Connection, batch: int = 1000) -> Iterator[dict[str, Any]]:
    last = 0
    columns = [getattr(AuditEvent, name) for name in (*HASHED_FIELDS, "hash")]
    while True:
        chunk = conn.execute(
            select(*columns).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).mappings().all()
        if not chunk:
            return
        for row in chunk:
            yield dict(row)
        last = chunk[-1]["seq"]


def verify(conn: Connection, rows: Iterable[dict[str, Any]] | None = None) -> VerifyResult:
    """Walk the chain in sequence order; report the first event that does not hold."""
    prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for row in rows if rows is not None else _rows(conn):
        bad = None
        if row["seq"] != expected_seq:
            bad = f"sequence gap: expected #{expected_seq}, found #{row['seq']}"
        elif row["prev_hash"] != prev:
            bad = "prev_hash does not match the previous event's hash"
        elif compute_hash(row) != row["hash"]:
            bad = "content does not match its hash"
        if bad:
            return VerifyResult(False, checked, row["seq"], row["id"], bad)
        prev = row["hash"]
        expected_seq += 1
        checked += 1
    head = conn.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
    ).first()
    if head is not None and (head[0] != checked or head[1] != prev):
        return VerifyResult(
            False, checked, head[0], None,
            f"the chain ends at #{checked} but its head records #{head[0]}: events were removed",
        )
    return VerifyResult(True, checked)
