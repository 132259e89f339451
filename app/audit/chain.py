"""Appending to the keyed hash chain and checking it.

Each event's ``hash`` is an HMAC-SHA256, under ``AUDIT_KEY`` (``app.audit.keys``), of
its own fields and the previous event's hash, so changing, removing or reordering any
stored event breaks every MAC after it, and someone who can write the tables but has
not the key cannot compute MACs that verify.

Chains begun before the key existed hold plain SHA-256 hashes. Their keyed part starts
with a ``chain_keyed`` event (``KEYED_ACTION``), appended under the head's lock before
the first keyed event: every event before it is checked as plain SHA-256, it and every
later one as HMACs. The marker's MAC covers the last unkeyed hash, so the unkeyed part
cannot change afterwards either; and since only the key holder can write a marker that
verifies, a non-empty chain without one fails verification.

Truncation (the last events deleted, the head moved back) leaves a consistent shorter
chain: checkpoints written outside the database (``app.audit.checkpoints``) catch it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
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
    "outcome", "ip", "request_id", "before", "after", "prev_hash", "via",
)
# Hashed only when set: events written before it existed keep their hashes.
_OPTIONAL = frozenset({"via"})


def _canonical_time(value: dt.datetime) -> str:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


# The event that starts the keyed part of a chain (see the module's docstring).
KEYED_ACTION = "chain_keyed"
KEYED_TARGET = "audit_chain"


def compute_hash(fields: dict[str, Any], key: bytes | None = None) -> str:
    """The event's HMAC-SHA256 under ``key``; without a key, the plain SHA-256 of the
    events written before the chain was keyed."""
    material = {name: fields.get(name) for name in HASHED_FIELDS
                if name not in _OPTIONAL or fields.get(name) is not None}
    material["at"] = _canonical_time(fields["at"])
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    if key is None:
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return hmac.new(key, blob.encode("utf-8"), hashlib.sha256).hexdigest()


def is_marker(fields: dict[str, Any]) -> bool:
    return fields.get("action") == KEYED_ACTION and fields.get("target_type") == KEYED_TARGET


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


# Databases (by URL) whose chain this process has seen keyed: the marker is looked
# for once per process, not at every append.
_keyed: set[str] = set()


def _marker(legacy: int) -> dict[str, Any]:
    return {
        "actor": "system", "action": KEYED_ACTION, "target_type": KEYED_TARGET,
        "outcome": "success",
        "after": {"algorithm": "HMAC-SHA256", "unkeyed_events": legacy},
    }


def _needs_marker(conn: Connection, seq: int) -> bool:
    """Whether the chain (head at ``seq``, locked) has no keyed part yet."""
    if seq == 0:
        return True
    url = conn.engine.url.render_as_string(hide_password=True)
    if url in _keyed:
        return False
    found = conn.execute(
        select(AuditEvent.seq).where(AuditEvent.action == KEYED_ACTION,
                                     AuditEvent.target_type == KEYED_TARGET).limit(1)
    ).first()
    if found is None:
        return True
    _keyed.add(url)  # only once committed: a marker rolled back is written again
    return False


def ensure_keyed(conn: Connection, key: bytes) -> bool:
    """Start the keyed part of the chain now if it has none; whether it did."""
    seq, _prev = _lock_head(conn)
    if seq == 0 or not _needs_marker(conn, seq):
        return False
    append(conn, [], key)
    return True


def append(conn: Connection, events: list[dict[str, Any]], key: bytes) -> list[dict[str, Any]]:
    """Chain and insert ``events`` inside the caller's transaction; returns the rows
    (led by the ``chain_keyed`` marker when the chain had no keyed part yet)."""
    seq, prev = _lock_head(conn)
    if _needs_marker(conn, seq):
        events = [_marker(seq), *events]
    if not events:
        return []
    rows = []
    for event in events:
        seq += 1
        row = {name: event.get(name) for name in HASHED_FIELDS}
        row["id"] = event.get("id") or new_id()
        row["seq"] = seq
        row["at"] = event.get("at") or dt.datetime.now(dt.UTC)
        row["prev_hash"] = prev
        prev = row["hash"] = compute_hash(row, key)
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
    checkpoints: int = 0  # how many checkpoints were compared with the chain


@dataclass(frozen=True)
class Checkpoint:
    """The head as it was at some time, kept outside the database."""

    seq: int
    mac: str
    where: str  # file and line, for the message


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


def _check_row(row: dict[str, Any], expected_seq: int, prev: str, key: bytes | None) -> str | None:
    if row["seq"] != expected_seq:
        return f"sequence gap: expected #{expected_seq}, found #{row['seq']}"
    if row["prev_hash"] != prev:
        return "prev_hash does not match the previous event's hash"
    if compute_hash(row, key) != row["hash"]:
        if key is None:
            return "content does not match its hash"
        return ("content does not match its MAC: the event was rewritten (or AUDIT_KEY is "
                "not the key the chain was written with)")
    return None


def verify(
    conn: Connection,
    key: bytes,
    rows: Iterable[dict[str, Any]] | None = None,
    checkpoints: Iterable[Checkpoint] = (),
) -> VerifyResult:
    """Walk the chain in sequence order; report the first event that does not hold, or
    a checkpoint the chain no longer matches (an event rewritten, events removed)."""
    pinned: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        pinned.setdefault(cp.seq, []).append(cp)
    prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    keyed = False
    for row in rows if rows is not None else _rows(conn):
        keyed = keyed or is_marker(row)
        bad = _check_row(row, expected_seq, prev, key if keyed else None)
        for cp in pinned.get(row["seq"], ()):
            if bad is None and cp.mac != row["hash"]:
                bad = f"does not match the checkpoint at {cp.where}: the event was rewritten"
        if bad:
            return VerifyResult(False, checked, row["seq"], row["id"], bad)
        prev = row["hash"]
        expected_seq += 1
        checked += 1
    compared = sum(len(found) for seq, found in pinned.items() if seq <= checked)
    if checked and not keyed:
        return VerifyResult(
            False, checked, None, None,
            f"no event of the chain's {checked} is keyed ({KEYED_ACTION} marker missing): "
            "it was rewritten, or nothing was written since AUDIT_KEY was set (run "
            "`flask --app app audit checkpoint` to key it)",
        )
    beyond = [cp for seq, found in pinned.items() if seq > checked for cp in found]
    if beyond:
        newest = max(beyond, key=lambda cp: cp.seq)
        return VerifyResult(
            False, checked, newest.seq, None,
            f"the chain ends at #{checked} but the checkpoint at {newest.where} records "
            f"#{newest.seq}: events were removed",
        )
    head = conn.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
    ).first()
    if head is not None and (head[0] != checked or head[1] != prev):
        return VerifyResult(
            False, checked, head[0], None,
            f"the chain ends at #{checked} but its head records #{head[0]}: events were removed",
        )
    return VerifyResult(True, checked, checkpoints=compared)


def head(conn: Connection) -> tuple[int, str]:
    """The newest event's sequence number and MAC, as the head row records them."""
    found = conn.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
    ).first()
    return (int(found[0]), str(found[1])) if found is not None else (0, GENESIS_HASH)
