"""The engine retries its own bookkeeping on a broken connection, boundedly, and only
on such failures (``jobs.retried``)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from capability.engine import jobs


class _Session:
    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.rollbacks = 0

    def rollback(self) -> None:
        self.rollbacks += 1


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch):
    monkeypatch.setattr(jobs, "BOOKKEEPING_PAUSES", (0.0,))


def _failing(times: int, error: Exception):
    calls = []

    def transaction() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return transaction, calls


def _reset() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("terminating connection"))


def test_a_broken_connection_is_tried_again():
    session = _Session()
    transaction, calls = _failing(jobs.BOOKKEEPING_TRIES - 1, _reset())
    assert jobs.retried(session, transaction, "a step") == "done"  # type: ignore[arg-type]
    assert len(calls) == jobs.BOOKKEEPING_TRIES
    assert session.rollbacks == jobs.BOOKKEEPING_TRIES - 1


def test_the_tries_are_bounded():
    session = _Session()
    transaction, calls = _failing(jobs.BOOKKEEPING_TRIES, _reset())
    with pytest.raises(OperationalError):
        jobs.retried(session, transaction, "a step")  # type: ignore[arg-type]
    assert len(calls) == jobs.BOOKKEEPING_TRIES


def test_other_database_errors_are_not_retried():
    session = _Session()
    transaction, calls = _failing(1, IntegrityError("INSERT", {}, Exception("duplicate")))
    with pytest.raises(IntegrityError):
        jobs.retried(session, transaction, "a step")  # type: ignore[arg-type]
    assert len(calls) == 1 and session.rollbacks == 0
