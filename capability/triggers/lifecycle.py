"""A workflow deleted disables its triggers (TRIGGERS.md), in the transaction that
deletes it, whichever path deleted it: a ``before_flush`` hook on the application's
session (``install``), so the workflows' service never imports this package."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect, or_, update
from sqlalchemy.orm import Session, scoped_session

from app.times import utcnow
from capability.models import EventTrigger, Workflow
from capability.triggers.models import Schedule, Webhook

WHY = "its workflow was deleted"


def _deleted(obj: Any) -> bool:
    if not isinstance(obj, Workflow) or obj.deleted_at is None:
        return False
    history: Any = inspect(obj).attrs.deleted_at.history
    return bool(history.added) and not any(history.deleted)


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    for workflow in [o for o in session.dirty if _deleted(o)]:
        conn = session.connection()
        conn.execute(update(Schedule).where(Schedule.workflow_id == workflow.id)
                     .values(disabled_reason=WHY, next_due=None))
        conn.execute(update(Webhook).where(Webhook.workflow_id == workflow.id)
                     .values(disabled_reason=WHY))
        conn.execute(update(EventTrigger).where(or_(
            EventTrigger.workflow_id == workflow.id,
            EventTrigger.on_workflow_id == workflow.id)).values(
            enabled=False, last_refusal=f"disabled: {WHY}", last_refusal_at=utcnow()))


def install(session: scoped_session[Any]) -> None:
    """Attach the hook to the application's session (idempotent)."""
    if not event.contains(session, "before_flush", _before_flush):
        event.listen(session, "before_flush", _before_flush)
