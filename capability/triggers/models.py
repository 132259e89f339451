"""The tables of triggers.

* ``Schedule``: a cron in an IANA zone that starts runs of one workflow (TRIGGERS.md).
  ``next_due`` is when a scheduler should look at it next (the next tick plus its
  jitter, or a buffered run waiting): schedulers read the due ones by that index.
* ``ScheduleTick``: the ledger. Its primary key is (schedule, instant): a tick is
  decided by whichever scheduler inserts its row, in the transaction that creates its
  run, so it is decided exactly once however many schedulers run (``ticker``).
* ``Webhook``, ``WebhookDelivery`` (the delivery log), ``WebhookSeen`` (delivery ids
  accepted, for de-duplication).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask_appbuilder.models.sqla import Model
from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.ids import new_id
from app.models import Team
from app.security.scope import TeamScoped
from app.times import UtcDateTime, utcnow


class Schedule(TeamScoped, Model):
    __tablename__ = "apg_schedule"
    __table_args__ = (
        Index("ix_apg_schedule_due", "next_due"),
        Index("ix_apg_schedule_workflow", "workflow_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_workflow.id", ondelete="CASCADE"), nullable=False)
    cron: Mapped[str] = mapped_column(String(255), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    start_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    end_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    catchup: Mapped[str] = mapped_column(String(16), nullable=False, default="latest")
    catchup_window: Mapped[str] = mapped_column(String(16), nullable=False, default="1d")
    overlap: Mapped[str] = mapped_column(String(16), nullable=False, default="skip")
    jitter: Mapped[str] = mapped_column(String(16), nullable=False, default="0s")
    dst_missing: Mapped[str] = mapped_column(String(16), nullable=False, default="shift")
    dst_repeated: Mapped[str] = mapped_column(String(16), nullable=False, default="first")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Every tick up to this instant is decided (or was dropped by a pause or an edit).
    decided_until: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    next_due: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # A buffer_one tick waiting for the active run to end (its instant).
    buffered_for: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)

    team: Mapped[Team] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"schedule {self.cron} ({self.timezone})"


class ScheduleTick(Model):
    __tablename__ = "apg_schedule_tick"

    schedule_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_schedule.id", ondelete="CASCADE"), primary_key=True)
    scheduled_for: Mapped[dt.datetime] = mapped_column(UtcDateTime, primary_key=True)
    decided_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(36))
    reason: Mapped[str | None] = mapped_column(Text)


class Webhook(TeamScoped, Model):
    """``POST /hooks/<token>`` starts a run of ``workflow_id``. Only the SHA-256 of the
    token is stored (the token is shown once, at creation and at each rotation);
    ``secret_name`` names a team secret holding the signing secret."""

    __tablename__ = "apg_webhook"
    __table_args__ = (Index("ix_apg_webhook_workflow", "workflow_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_workflow.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    scheme: Mapped[str] = mapped_column(String(32), nullable=False, default="none")
    secret_name: Mapped[str | None] = mapped_column(String(63))
    tolerance: Mapped[str] = mapped_column(String(16), nullable=False, default="5m")
    header: Mapped[str | None] = mapped_column(String(128))  # hmac-sha256 only
    prefix: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    encoding: Mapped[str] = mapped_column(String(8), nullable=False, default="hex")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    filter: Mapped[str | None] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    token_prefix: Mapped[str] = mapped_column(String(8), nullable=False)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)

    team: Mapped[Team] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"webhook {self.name}"


class WebhookDelivery(Model):
    """The delivery log (``GET /api/v1/webhooks/<id>/deliveries``): never a body, a
    secret or a signature header."""

    __tablename__ = "apg_webhook_delivery"
    __table_args__ = (Index("ix_apg_webhook_delivery_received", "webhook_id", "received_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_webhook.id", ondelete="CASCADE"), nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    delivery_id: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(36))
    reason: Mapped[str | None] = mapped_column(Text)


class WebhookSeen(Model):
    """One row per delivery id a webhook accepted: the primary key makes a replay within
    ``WEBHOOK_DEDUPE_WINDOW`` find the first run, never start a second one."""

    __tablename__ = "apg_webhook_seen"

    webhook_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_webhook.id", ondelete="CASCADE"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(36))



class Backfill(TeamScoped, Model):
    """Runs for a schedule's ticks in a past (or any) range: ``ticks`` is the list made
    at creation (DST policy applied); a scheduler's pass starts them ``next_index`` on,
    as ``max_active_runs`` and ``overlap`` admit (``backfills.advance``)."""

    __tablename__ = "apg_backfill"
    __table_args__ = (Index("ix_apg_backfill_status", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    schedule_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_schedule.id", ondelete="CASCADE"), nullable=False)
    workflow_id: Mapped[str] = mapped_column(String(36), nullable=False)
    start: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    end: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    overlap: Mapped[str] = mapped_column(String(16), nullable=False, default="allow")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    ticks: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    next_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # running (runs still to start or to end), done, cancelled
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)

    team: Mapped[Team] = relationship(lazy="joined")
