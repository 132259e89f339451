"""What the connectors' tests share: a PostgreSQL connection's body, its recognisable
secret, and a fixture that lets tasks reach the tests' PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tests.support.app import LOOPBACK_PEERS

SECRET = "pw-SECRET-4f7a9c"


@pytest.fixture()
def own_postgres(app: Flask) -> Iterator[None]:
    """The tests' PostgreSQL is on loopback, maybe the app's own endpoint, which the
    egress policy denies unless allowed by port."""
    before = app.config["EGRESS_ALLOW"]
    app.config["EGRESS_ALLOW"] = f"{LOOPBACK_PEERS} 127.0.0.1:5432"
    yield
    app.config["EGRESS_ALLOW"] = before


def postgres_body(op: dict[str, Any], name: str = "warehouse",
                  database: str = "postgres") -> dict[str, Any]:
    return {"team": op["team"]["name"], "name": name, "type": "postgres",
            "config": {"host": "127.0.0.1", "port": 5432, "database": database,
                       "username": "postgres"},
            "secret": {"password": SECRET}, "description": "the warehouse"}
