"""The engine's unit of work (``engine.outbox``): what a transaction sends, stops and
publishes goes out after its commit, never for a transaction that was rolled back or
whose commit failed; an engine step without an owner is refused."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Tenant
from capability.engine import outbox
from capability.engine.dispatch import Send
from tests.support.app import unique
from tests.support.driver import Fifo


def test_what_a_transaction_gathered_goes_out_after_its_commit(app):
    fifo = Fifo()
    with app.app_context():
        box = outbox.begin(db.session, fifo)
        box.send(Send("a1", "default"))
        box.stop("a0")
        box.touch("r1")
        box.touch("r1")
        assert list(fifo.items) == [] and fifo.published == []  # nothing before the commit
        outbox.commit(db.session)
        db.session.remove()
    assert [s.attempt_id for s in fifo.items] == ["a1"]
    assert fifo.published == ["r1"]


def test_a_rollback_drops_it_and_a_failed_commit_sends_nothing(app):
    fifo = Fifo()
    name = unique("tenant")
    with app.app_context():
        outbox.begin(db.session, fifo).send(Send("rolled-back", "default"))
        outbox.rollback(db.session)
        db.session.add(Tenant(name=name))
        db.session.commit()
        box = outbox.begin(db.session, fifo)
        box.send(Send("never", "default"))
        db.session.add(Tenant(name=name))  # the same name: the commit fails
        with pytest.raises(IntegrityError):
            outbox.commit(db.session)
        db.session.rollback()
        with pytest.raises(RuntimeError, match="no unit of work"):
            outbox.of(db.session)
        db.session.remove()
    assert list(fifo.items) == [] and fifo.published == []


def test_a_send_kept_by_the_job_is_not_enqueued(app):
    fifo = Fifo()
    with app.app_context():
        box = outbox.begin(db.session, fifo)
        kept, other = Send("kept", "default"), Send("other", "default")
        box.send(kept)
        box.send(other)
        outbox.commit(db.session, deliver=False).deliver(keep=kept)
        db.session.remove()
    assert [s.attempt_id for s in fifo.items] == ["other"]
