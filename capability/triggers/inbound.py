"""A delivery to ``POST /hooks/<token>`` (TRIGGERS.md, "Inbound"): the answers of the
contract's table, decided here; ``hooks_web`` only adapts Flask's request.

Order: the token (unknown, rotated or disabled: 404, nothing recorded), the rate limit
(429, counted in Redis), the size (413), the signature (401), the body (422) — each
refusal logged and audited — de-duplication (200 with the first run), the filter (200, no run), the
params (422), then the run. The run, the delivery's log row and the claim of its
delivery id commit in one transaction: a replay racing the first delivery finds the
claim and starts nothing. Expressions run under the expression budget; nothing is
evaluated while a row is locked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import delete, select

from app.audit.recorder import build_event, record
from app.extensions import DbSession
from app.ids import new_id
from app.security.actor import Actor
from capability import dsl
from capability.engine import outbox
from capability.engine.dispatch import Dispatcher
from capability.models import Workflow
from capability.secrets.vault import SecretsKeyError, values_for
from capability.triggers import clock, cron, signatures, webhooks
from capability.triggers.models import Webhook, WebhookDelivery, WebhookSeen

log = logging.getLogger("capability.triggers")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 256 * 1024  # WEBHOOK_MAX_BYTES
    rate: int = 60  # WEBHOOK_RATE_LIMIT, deliveries a minute per webhook (0: none)
    dedupe_window: dt.timedelta = dt.timedelta(hours=24)  # WEBHOOK_DEDUPE_WINDOW
    log_days: int = 14  # WEBHOOK_LOG_DAYS
    secrets_key: str = ""
    secret_key: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Limits:
        return cls(max_bytes=int(config.get("WEBHOOK_MAX_BYTES") or 256 * 1024),
                   rate=int(config.get("WEBHOOK_RATE_LIMIT") or 0),
                   dedupe_window=dt.timedelta(
                       seconds=int(config.get("WEBHOOK_DEDUPE_WINDOW") or 86400)),
                   log_days=int(config.get("WEBHOOK_LOG_DAYS") or 14),
                   secrets_key=str(config.get("SECRETS_KEY") or ""),
                   secret_key=str(config["SECRET_KEY"]))


@dataclass(frozen=True)
class Delivery:
    """What arrived: lower-case header names, the query and the raw body."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    content_type: str = ""
    ip: str | None = None
    length: int | None = None  # Content-Length as sent (None: unknown)


@dataclass
class Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _caller(delivery: Delivery, webhook: Webhook) -> Actor:
    return Actor(username=f"webhook:{webhook.name}", ip=delivery.ip)


# When this process last pruned each webhook's log: at most once a minute, rather than
# a DELETE with every delivery.
_pruned: dict[str, float] = {}
PRUNE_EVERY = 60.0


def _record(session: DbSession, webhook: Webhook, limits: Limits, outcome: str, status: int,
            delivery_id: str | None = None, run_id: str | None = None,
            reason: str | None = None) -> None:
    """A row of the delivery log (in the caller's transaction), old rows pruned."""
    now = clock.now()
    session.add(WebhookDelivery(webhook_id=webhook.id, received_at=now, outcome=outcome,
                                status_code=status, delivery_id=delivery_id, run_id=run_id,
                                reason=reason))
    if time.monotonic() - _pruned.get(webhook.id, -PRUNE_EVERY) < PRUNE_EVERY:
        return
    _pruned[webhook.id] = time.monotonic()
    session.execute(delete(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook.id,
        WebhookDelivery.received_at < now - dt.timedelta(days=limits.log_days)))


def _refuse(session: DbSession, webhook: Webhook, limits: Limits, delivery: Delivery,
            outcome: str, status: int, reason: str, delivery_id: str | None = None) -> Answer:
    """Log and audit a refused delivery: who sent it and why, never the body, a secret
    or a signature."""
    session.rollback()
    _record(session, webhook, limits, outcome, status, delivery_id, reason=reason)
    record(session, build_event(
        _caller(delivery, webhook), "deliver", "webhook", webhook.id,
        outcome="denied" if status == 401 else "error",
        team=webhook.team.name, tenant=webhook.team.tenant.name,
        after={"status": status, "reason": reason}))
    session.commit()
    return Answer(status, {"message": reason})


def _over_rate(dispatcher: Dispatcher, webhook: Webhook, limits: Limits) -> bool:
    if limits.rate <= 0:
        return False
    minute = int(clock.now().timestamp() // 60)
    key = f"apg:webhook:rate:{webhook.id}:{minute}"
    with dispatcher.conn.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count = pipe.execute()[0]
    if count > limits.rate:
        dispatcher.conn.incr(f"apg:webhook:limited:{webhook.id}")
        return True
    return False


def _parse(delivery: Delivery) -> tuple[Any, str | None]:
    kind = delivery.content_type.split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(delivery.body or b"null"), None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, f"the body is not JSON although Content-Type says so: {exc}"
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(delivery.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return None, "the form body is not UTF-8"
        return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}, None
    try:
        return delivery.body.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "the body is not UTF-8 text"


def _signing_secret(session: DbSession, webhook: Webhook,
                    limits: Limits) -> tuple[str | None, list[str] | None]:
    """The signing secret ("" for none; None: the team has no secret of that name), and
    the team's secret values read with it, which the stored payload is masked with
    (``runs.starts``; None: read them there). One statement for both."""
    try:
        found = values_for(session, limits.secrets_key, limits.secret_key, webhook.team_id,
                           None)
    except SecretsKeyError:
        # Some other secret of the team does not decrypt: this one may (raises if not).
        if not webhook.secret_name:
            return "", None
        named = values_for(session, limits.secrets_key, limits.secret_key, webhook.team_id,
                           [webhook.secret_name])
        return named.get(webhook.secret_name), None
    masks = [v for v in found.values() if v]
    return (found.get(webhook.secret_name) if webhook.secret_name else ""), masks


def receive(session: DbSession, dispatcher: Dispatcher, limits: Limits, token: str,
            delivery: Delivery) -> Answer:
    webhook = webhooks.find_by_token(session, token)
    if webhook is None or not webhook.enabled or webhook.disabled_reason:
        return Answer(404, {"message": "Not found"})
    workflow = session.get(Workflow, webhook.workflow_id)
    if workflow is None or workflow.deleted_at is not None:
        return Answer(404, {"message": "Not found"})
    if _over_rate(dispatcher, webhook, limits):
        return Answer(429, {"message": f"over {limits.rate} deliveries a minute"})
    if (delivery.length or len(delivery.body)) > limits.max_bytes:
        return _refuse(session, webhook, limits, delivery, "too_large", 413,
                       f"the body is over WEBHOOK_MAX_BYTES ({limits.max_bytes} bytes)")
    try:
        secret, masks = _signing_secret(session, webhook, limits)
    except SecretsKeyError as exc:
        return _refuse(session, webhook, limits, delivery, "denied", 401, str(exc))
    if secret is None:
        return _refuse(session, webhook, limits, delivery, "denied", 401,
                       f"the team has no secret named {webhook.secret_name!r}")
    scheme = signatures.Scheme(
        webhook.scheme, secret, cron.duration(webhook.tolerance, "tolerance"),
        webhook.header or signatures.DEFAULT_HEADER, webhook.prefix, webhook.encoding)
    bad = signatures.verify(scheme, delivery.headers, delivery.body, clock.now())
    delivery_id = signatures.delivery_id(webhook.scheme, delivery.headers, delivery.body)
    if bad:
        return _refuse(session, webhook, limits, delivery, "denied", 401, bad, delivery_id)
    body, problem = _parse(delivery)
    if problem:
        return _refuse(session, webhook, limits, delivery, "invalid", 422, problem, delivery_id)
    if delivery_id:
        first = _seen(session, webhook.id, delivery_id, limits)
        if first is not None:
            _record(session, webhook, limits, "duplicate", 200, delivery_id, first.run_id,
                    "the same delivery was accepted before")
            session.commit()
            return Answer(200, {"run_id": first.run_id, "duplicate": True})
    from capability.dsl.expressions import ExpressionError, render  # on the first delivery

    scope = {"body": body, "headers": dict(delivery.headers), "query": dict(delivery.query)}
    budget = dispatcher.settings.expression_budget
    session.rollback()  # no transaction held while expressions run
    try:
        if webhook.filter and not render(webhook.filter, scope, "filter", budget):
            _record(session, webhook, limits, "filtered", 200, delivery_id,
                    reason="the filter is false")
            session.commit()
            return Answer(200, {"run_id": None, "filtered": True})
        params = render(webhook.params, scope, "params", budget)
    except ExpressionError as exc:
        return _refuse(session, webhook, limits, delivery, "invalid", 422, str(exc),
                       delivery_id)
    return _start(session, dispatcher, limits, webhook, workflow, delivery, delivery_id,
                  params, body, masks)


def _seen(session: DbSession, webhook_id: str, delivery_id: str,
          limits: Limits) -> WebhookSeen | None:
    found = session.get(WebhookSeen, (webhook_id, delivery_id))
    if found is not None and found.received_at >= clock.now() - limits.dedupe_window:
        return found
    return None


def _start(session: DbSession, dispatcher: Dispatcher, limits: Limits, webhook: Webhook,
           workflow: Workflow, delivery: Delivery, delivery_id: str | None,
           params: Any, body: Any, masks: list[str] | None) -> Answer:
    from capability.runs import starts as runs

    definition = runs.current_definition(session, workflow)
    errors = dsl.validate_params(definition, params if isinstance(params, dict) else {})[1]
    if not isinstance(params, dict) or errors:
        found = errors or [{"path": "params", "message": "must render to an object"}]
        return _refuse(session, webhook, limits, delivery, "invalid", 422,
                       "; ".join(f"{e.get('path') or 'params'}: {e['message']}" for e in found),
                       delivery_id)
    run_id = new_id()  # named by the claim of its delivery id, made in the same commit
    outbox.begin(session, dispatcher)
    try:
        if delivery_id and not _claim(session, webhook.id, delivery_id, run_id, limits):
            outbox.rollback(session)
            first = session.get(WebhookSeen, (webhook.id, delivery_id))
            _record(session, webhook, limits, "duplicate", 200, delivery_id,
                    first.run_id if first else None, "the same delivery was accepted before")
            session.commit()
            return Answer(200, {"run_id": first.run_id if first else None, "duplicate": True})
        run = runs.open_triggered(session, dispatcher, workflow, params, trigger="webhook",
                                  source=("webhook", webhook.id), delivery_id=delivery_id,
                                  who=f"webhook:{webhook.name}", payload=body,
                                  run_id=run_id, masks=masks)
        _record(session, webhook, limits, "accepted", 202, delivery_id, run.id)
        box = outbox.commit(session, deliver=False)
    except runs.NotStarted as exc:
        outbox.rollback(session)
        return _refuse(session, webhook, limits, delivery, "invalid", 422, str(exc),
                       delivery_id)
    except BaseException:
        outbox.rollback(session)
        raise
    box.deliver(tolerant=True)
    return Answer(202, {"run_id": run_id})  # not run.id: expired by the commit


def _claim(session: DbSession, webhook_id: str, delivery_id: str, run_id: str,
           limits: Limits) -> bool:
    """Claim the delivery id in this transaction; False when another delivery holds it
    within the window (a claim older than the window is taken over)."""
    from sqlalchemy.dialects import postgresql, sqlite

    conn = session.connection()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    now = clock.now()
    done = conn.execute(insert(WebhookSeen).values(
        webhook_id=webhook_id, delivery_id=delivery_id, received_at=now, run_id=run_id
    ).on_conflict_do_nothing())
    if done.rowcount:
        return True
    row = session.execute(select(WebhookSeen).where(
        WebhookSeen.webhook_id == webhook_id, WebhookSeen.delivery_id == delivery_id
    ).with_for_update()).scalar()
    if row is None or row.received_at >= now - limits.dedupe_window:
        return False
    row.received_at, row.run_id = now, run_id
    return True

