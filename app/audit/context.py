"""Who an audit event is attributed to, without services reading ``g``.

A service runs its work inside ``acting_as(actor)``; a request falls back to the
request's own actor; anything else is the system.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from flask import has_request_context

from app.security.actor import SYSTEM, Actor

_acting: ContextVar[Actor | None] = ContextVar("apg_audit_actor", default=None)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _acting.set(actor)
    try:
        yield actor
    finally:
        _acting.reset(token)


def current_actor() -> Actor:
    actor = _acting.get()
    if actor is not None:
        return actor
    if has_request_context():
        from app.security.request import request_actor

        return request_actor()
    return SYSTEM
