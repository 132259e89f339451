"""Audit tables. Rows are only ever inserted (a trigger refuses UPDATE and DELETE)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from flask_appbuilder.models.sqla import Model
from sqlalchemy import JSON, BigInteger, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import ColumnElement

from app.ids import new_id
from app.times import UtcDateTime

if TYPE_CHECKING:
    from app.security.actor import Actor

OUTCOMES = ("success", "denied", "error")


class AuditEvent(Model):
    __tablename__ = "apg_audit_event"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, index=True)
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    target_type: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    target_id: Mapped[str | None] = mapped_column(String(256), index=True)
    team: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # What the actor acted through when not in person: ``api_key:<prefix>``, ``mcp:<tool>``.
    via: Mapped[str | None] = mapped_column(String(128))
    before: Mapped[Any | None] = mapped_column(JSON)
    after: Mapped[Any | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)

    @classmethod
    def scope_clause(cls, actor: Actor) -> ColumnElement[bool] | None:
        """Admin reads every event; an Auditor reads the events of their own tenants."""
        if actor.is_admin:
            return None
        names = sorted(actor.tenant_names)
        return cls.tenant.in_(names) if names else false()

    def __repr__(self) -> str:
        return f"#{self.seq} {self.actor} {self.action} {self.target_type}"


class AuditHead(Model):
    """One row: the sequence number and hash of the newest event.

    Appending locks this row (PostgreSQL) or takes SQLite's write lock through it, so
    concurrent writers line up and never fork the chain.
    """

    __tablename__ = "apg_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
