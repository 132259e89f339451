"""Reading the audit trail: filters, row scope, CSV export, verification."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.audit import chain, checkpoints, keys
from app.audit.models import OUTCOMES, AuditEvent
from app.errors import ValidationFailed
from app.extensions import DbSession
from app.security.actor import Actor
from app.security.scope import scoped

EXPORT_COLUMNS = (
    "id", "seq", "at", "tenant", "actor", "action", "target_type", "target_id", "team",
    "outcome", "ip", "request_id", "via", "before", "after", "prev_hash", "hash",
)


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None  # target_type, or target_type:target_id
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def from_args(cls, args: Any) -> AuditFilter:
        errors = []

        def when(name: str) -> dt.datetime | None:
            raw = args.get(name)
            if not raw:
                return None
            try:
                value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                errors.append({"path": name, "message": "expected an ISO 8601 date or time"})
                return None
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

        outcome = args.get("outcome") or None
        if outcome and outcome not in OUTCOMES:
            errors.append({"path": "outcome", "message": f"one of {', '.join(OUTCOMES)}"})
        result = cls(
            actor=args.get("actor") or None,
            action=args.get("action") or None,
            target=args.get("target") or None,
            outcome=outcome,
            since=when("since"),
            until=when("until"),
        )
        if errors:
            raise ValidationFailed("Invalid audit filter", errors)
        return result


def conditions(flt: AuditFilter) -> list[Any]:
    found: list[Any] = []
    if flt.actor:
        found.append(AuditEvent.actor == flt.actor)
    if flt.action:
        found.append(AuditEvent.action == flt.action)
    if flt.target:
        target_type, _, target_id = flt.target.partition(":")
        found.append(AuditEvent.target_type == target_type)
        if target_id:
            found.append(AuditEvent.target_id == target_id)
    if flt.outcome:
        found.append(AuditEvent.outcome == flt.outcome)
    if flt.since:
        found.append(AuditEvent.at >= flt.since)
    if flt.until:
        found.append(AuditEvent.at <= flt.until)
    return found


def query(actor: Actor, flt: AuditFilter) -> Any:
    return scoped(select(AuditEvent), AuditEvent, actor).where(*conditions(flt))


def list_events(
    session: DbSession, actor: Actor, flt: AuditFilter, page: int = 0, page_size: int = 100
) -> tuple[int, list[AuditEvent]]:
    from sqlalchemy import func

    stmt = query(actor, flt)
    count = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = session.execute(
        stmt.order_by(AuditEvent.seq.desc()).offset(page * page_size).limit(page_size)
    ).scalars()
    return count, list(rows)


def as_dict(event: AuditEvent) -> dict[str, Any]:
    out = {name: getattr(event, name) for name in EXPORT_COLUMNS}
    at = event.at if event.at.tzinfo else event.at.replace(tzinfo=dt.UTC)
    out["at"] = at.isoformat()
    return out


def csv_stream(batches: Iterator[list[AuditEvent]]) -> Iterator[str]:
    """CSV text, one chunk per batch, so a large trail never sits in memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(EXPORT_COLUMNS)
    yield flush()
    for batch in batches:
        for event in batch:
            row = as_dict(event)
            for key in ("before", "after"):
                row[key] = "" if row[key] is None else json.dumps(row[key], sort_keys=True)
            writer.writerow([csv_safe(row[name]) for name in EXPORT_COLUMNS])
        yield flush()


def export_csv(session: DbSession, actor: Actor, flt: AuditFilter) -> Iterator[str]:
    def batches() -> Iterator[list[AuditEvent]]:
        last = 0
        stmt = query(actor, flt).order_by(AuditEvent.seq).limit(500)
        while batch := list(session.execute(stmt.where(AuditEvent.seq > last)).scalars()):
            yield batch
            last = batch[-1].seq

    return csv_stream(batches())


def csv_safe(value: Any) -> Any:
    # Spreadsheets run cells that start with these as formulas (CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return "" if value is None else value


def verify(
    session: DbSession, config: Any, checkpoint_dir: Path | None = None
) -> chain.VerifyResult:
    """Check the chain under the configured key, against the checkpoints of
    ``checkpoint_dir`` (default: ``AUDIT_CHECKPOINT_DIR``). Raises ``CheckpointError``
    when a checkpoint file holds a line that is not one."""
    folder = checkpoint_dir or checkpoints.directory(config)
    pins = list(checkpoints.read(folder))
    try:
        return chain.verify(session.connection(), keys.audit_key(config), checkpoints=pins)
    finally:
        session.rollback()
