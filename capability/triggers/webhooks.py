"""Webhooks (TRIGGERS.md): create, change, rotate the token, read the delivery log.

A webhook belongs to its workflow's team: Authors manage, Viewers and Operators read,
another team's is 404. The token is made here, shown once (creation, rotation) and
stored only as its SHA-256. The signing secret is a team secret named by the webhook
(``signature.secret``), read from the encrypted store when a delivery arrives.
"""

from __future__ import annotations

import hashlib
import re
import secrets as random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select

from app.audit.context import acting_as
from app.audit.recorder import update_action
from app.errors import NotFound, ValidationFailed
from app.extensions import DbSession
from app.ids import new_id
from app.security.actor import Actor
from app.security.scope import scoped
from app.times import iso, utcnow
from capability import service
from capability.models import Secret
from capability.triggers import cron, rules, signatures
from capability.triggers.models import Webhook, WebhookDelivery

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HEADER = re.compile(r"^[A-Za-z0-9-]{1,128}$")


class SignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheme: Literal["none", "hmac-sha256", "github", "stripe", "slack",
                    "standard-webhooks"] = "none"
    secret: str | None = Field(default=None, max_length=63)
    tolerance: str = Field(default="5m", max_length=16)
    header: str | None = Field(default=None, max_length=128)
    prefix: str = Field(default="", max_length=32)
    encoding: Literal["hex", "base64"] = "hex"


class WebhookIn(BaseModel):
    """The body of ``POST /api/v1/webhooks/`` and ``PUT .../<id>`` (a whole webhook)."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(min_length=1, max_length=36)
    name: str = Field(min_length=1, max_length=63)
    enabled: bool = True
    signature: SignatureIn = Field(default_factory=SignatureIn)
    params: dict[str, Any] = Field(default_factory=dict)
    filter: str | None = Field(default=None, max_length=4000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("letters, digits, '.', '_' or '-' (at most 63), starting with a "
                             "letter or digit")
        return value


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(webhook: Webhook) -> str:
    token = random.token_urlsafe(32)  # 43 url-safe characters, 256 bits
    webhook.token_hash, webhook.token_prefix = _hash(token), token[:6]
    return token


def find_by_token(session: DbSession, token: str) -> Webhook | None:
    if not token or len(token) > 128:
        return None
    return session.execute(select(Webhook).where(Webhook.token_hash == _hash(token))).scalar()


def _check(session: DbSession, actor: Actor, data: WebhookIn) -> Any:
    from capability.dsl.expressions import check_syntax, find_expressions

    workflow = service.get_workflow(session, actor, data.workflow_id)
    rules.require(actor, workflow.team_id, rules.EDIT, "change its webhooks")
    errors: list[dict[str, str]] = []
    sig = data.signature
    if sig.scheme != "none":
        if not sig.secret:
            errors.append({"path": "signature.secret",
                           "message": f"required for {sig.scheme}: the name of a team secret"})
        elif session.execute(select(Secret.id).where(
                Secret.team_id == workflow.team_id, Secret.name == sig.secret)).first() is None:
            errors.append({"path": "signature.secret", "message":
                           f"the team has no secret named {sig.secret!r} (an Admin adds it "
                           "under Security → Secrets)"})
    try:
        cron.duration(sig.tolerance, "signature.tolerance")
    except cron.CronError as exc:
        errors.append({"path": "signature.tolerance", "message": str(exc)})
    if sig.header is not None and not HEADER.match(sig.header):
        errors.append({"path": "signature.header", "message": "an HTTP header name"})
    found = find_expressions(data.params, "params")
    if data.filter:
        found.append(("filter", data.filter))
    for path, text in found:
        problem = check_syntax(text)
        if problem:
            errors.append({"path": path, "message": problem})
    if errors:
        raise ValidationFailed("Invalid webhook", errors)
    return workflow


def _apply(webhook: Webhook, data: WebhookIn) -> None:
    sig = data.signature
    webhook.name, webhook.enabled = data.name, data.enabled
    webhook.scheme, webhook.secret_name = sig.scheme, sig.secret if sig.scheme != "none" else None
    webhook.tolerance, webhook.header = sig.tolerance, sig.header
    webhook.prefix, webhook.encoding = sig.prefix, sig.encoding
    webhook.params, webhook.filter = data.params, data.filter or None


def create_webhook(session: DbSession, actor: Actor, data: WebhookIn) -> tuple[Webhook, str]:
    """The webhook and its token (shown this once)."""
    workflow = _check(session, actor, data)
    with acting_as(actor):
        webhook = Webhook(id=new_id(), workflow_id=workflow.id, team_id=workflow.team_id,
                          created_by=actor.username, updated_by=actor.username)
        _apply(webhook, data)
        token = _new_token(webhook)
        session.add(webhook)
        session.commit()
    return webhook, token


def get_webhook(session: DbSession, actor: Actor, webhook_id: str) -> Webhook:
    found = session.execute(scoped(select(Webhook), Webhook, actor)
                            .where(Webhook.id == webhook_id)).scalar()
    if found is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return found


def list_webhooks(session: DbSession, actor: Actor,
                  workflow_id: str | None = None) -> list[Webhook]:
    query = scoped(select(Webhook), Webhook, actor).order_by(Webhook.created_at)
    if workflow_id:
        query = query.where(Webhook.workflow_id == workflow_id)
    return list(session.execute(query).scalars())


def update_webhook(session: DbSession, actor: Actor, webhook_id: str,
                   data: WebhookIn) -> Webhook:
    webhook = get_webhook(session, actor, webhook_id)
    rules.require(actor, webhook.team_id, rules.EDIT, "change its webhooks")
    if data.workflow_id != webhook.workflow_id:
        raise ValidationFailed("Invalid webhook", [
            {"path": "workflow_id", "message": "a webhook's workflow does not change"}])
    _check(session, actor, data)
    with acting_as(actor):
        _apply(webhook, data)
        webhook.updated_by, webhook.updated_at = actor.username, utcnow()
        session.commit()
    return webhook


def rotate_token(session: DbSession, actor: Actor, webhook_id: str) -> tuple[Webhook, str]:
    """A new token; the old one answers 404 from now on."""
    webhook = get_webhook(session, actor, webhook_id)
    rules.require(actor, webhook.team_id, rules.EDIT, "rotate its token")
    with acting_as(actor), update_action("rotate-token"):
        token = _new_token(webhook)
        webhook.updated_by, webhook.updated_at = actor.username, utcnow()
        session.commit()
    return webhook, token


def delete_webhook(session: DbSession, actor: Actor, webhook_id: str) -> None:
    webhook = get_webhook(session, actor, webhook_id)
    rules.require(actor, webhook.team_id, rules.EDIT, "delete its webhooks")
    with acting_as(actor):
        session.delete(webhook)
        session.commit()


def deliveries(session: DbSession, actor: Actor, webhook_id: str, limit: int = 100,
               offset: int = 0) -> tuple[int, list[WebhookDelivery]]:
    webhook = get_webhook(session, actor, webhook_id)
    where = WebhookDelivery.webhook_id == webhook.id
    total = session.execute(select(func.count()).select_from(WebhookDelivery).where(where)
                            ).scalar_one()
    rows = session.execute(select(WebhookDelivery).where(where).order_by(
        WebhookDelivery.received_at.desc()).limit(limit).offset(offset)).scalars()
    return int(total), list(rows)


def delivery_dict(row: WebhookDelivery) -> dict[str, Any]:
    return {"id": row.id, "received_at": iso(row.received_at), "outcome": row.outcome,
            "status_code": row.status_code, "delivery_id": row.delivery_id,
            "run_id": row.run_id, "reason": row.reason}


def webhook_dict(webhook: Webhook, token: str | None = None) -> dict[str, Any]:
    """A webhook as the API shows it. ``url`` is whole only with the token (creation,
    rotation); afterwards it shows the token's first characters."""
    return {
        "id": webhook.id, "workflow_id": webhook.workflow_id, "team": webhook.team.name,
        "name": webhook.name, "enabled": webhook.enabled,
        "signature": {"scheme": webhook.scheme, "secret": webhook.secret_name,
                      "tolerance": webhook.tolerance,
                      "header": webhook.header or (signatures.DEFAULT_HEADER
                                                   if webhook.scheme == "hmac-sha256" else None),
                      "prefix": webhook.prefix, "encoding": webhook.encoding},
        "params": webhook.params, "filter": webhook.filter,
        "url": f"/hooks/{token}" if token else f"/hooks/{webhook.token_prefix}…",
        **({"token": token} if token else {}),
        "disabled_reason": webhook.disabled_reason,
        "created_by": webhook.created_by, "updated_by": webhook.updated_by,
        "created_at": iso(webhook.created_at), "updated_at": iso(webhook.updated_at),
    }
