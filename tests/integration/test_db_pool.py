"""Pooled connections are tested at checkout only after sitting idle (app.db_pool)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from app import db_pool
from config import database_url


@pytest.fixture()
def engine(service_urls) -> Iterator[sa.Engine]:
    # An engine of its own, so the app's pool is not disturbed; the listeners are on
    # every pool of the process.
    engine = sa.create_engine(database_url(service_urls["database"]), pool_size=1,
                              max_overflow=0)
    yield engine
    engine.dispose()


def _broken_while_idle(engine: sa.Engine) -> None:
    """Use the pool's one connection, give it back, then break it behind the pool's
    back (what a server restart or a dropped proxy connection does)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.close()


def test_a_connection_used_a_moment_ago_is_not_tested(engine):
    _broken_while_idle(engine)
    with pytest.raises(sa.exc.DBAPIError), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))  # no test at checkout: the statement fails
    with engine.connect() as conn:  # ...and the pool replaced the connection after it
        assert conn.execute(sa.text("SELECT 2")).scalar() == 2


def test_an_idle_connection_is_tested_and_replaced(engine, monkeypatch):
    _broken_while_idle(engine)
    monkeypatch.setattr(db_pool, "IDLE_PING_SECONDS", 0.0)  # it sat idle long enough
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 3")).scalar() == 3


def test_a_read_on_a_dead_pooled_connection_is_retried_once(app, client, op, monkeypatch):
    """Every connection of the web's pool dies behind its back (a database restart, a
    terminated backend): an idempotent read is answered, not a 500."""
    from app.extensions import db
    from tests.support.faults import kill_pooled_connections

    # No test at checkout: only the retry of the request can save it.
    monkeypatch.setattr(db_pool, "IDLE_PING_SECONDS", 3600.0)
    assert client.get("/api/v1/workflows/", headers=op["h"]).status_code == 200
    with app.app_context():
        assert kill_pooled_connections(db.engine) >= 1
    r = client.get("/api/v1/workflows/", headers=op["h"])
    assert r.status_code == 200, r.get_data(as_text=True)
