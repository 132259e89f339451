"""A worker keeps the connections it read (``connections.resolve``), and a change through
the API reaches the very next attempt: the service bumps the generation in Redis. A
change made around the service (SQL by hand) is read again after ``CACHE_SECONDS``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from app.extensions import db
from capability.connections import resolve
from capability.connections.models import Connection
from tests.support.app import unique
from tests.support.runs import run_to_end

QUERY = [{"id": "q", "type": "sql", "with": {"connection": "local",
                                             "query": "SELECT v FROM t", "fetch": "one"}}]


def _database(app: Flask, value: int) -> str:
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    name = f"{unique('cache')}.db"
    with sqlite3.connect(files / name) as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (?)", (value,))
    return name


def _value(app: Flask, client: FlaskClient, op: dict[str, Any]) -> Any:
    run = run_to_end(app, client, op, QUERY)
    task = run["by_task"]["q"]
    return task["output"]["row"]["v"] if task["status"] == "succeeded" else task["error"]


def test_a_change_through_the_api_reaches_the_next_attempt(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "local", "type": "sqlite",
        "config": {"path": _database(app, 1)}})
    assert r.status_code == 201, r.get_json()
    cid = r.get_json()["id"]
    assert _value(app, client, op) == 1
    assert _value(app, client, op) == 1  # read from the cache this time
    r = client.put(f"/api/v1/connections/{cid}", headers=op["h"], json={
        "config": {"path": _database(app, 2)}, "secret": {}, "description": ""})
    assert r.status_code == 200, r.get_json()
    assert _value(app, client, op) == 2
    assert client.delete(f"/api/v1/connections/{cid}", headers=op["h"]).status_code == 200
    assert _value(app, client, op) == "unknown connection 'local'"


def test_a_change_around_the_service_is_read_again_after_a_while(
        app: Flask, client: FlaskClient, op: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "local", "type": "sqlite",
        "config": {"path": _database(app, 1)}})
    assert r.status_code == 201, r.get_json()
    assert _value(app, client, op) == 1
    moved = _database(app, 3)
    with app.app_context():
        db.session.execute(update(Connection).where(Connection.id == r.get_json()["id"])
                           .values(config={"path": moved}))
        db.session.commit()
        db.session.remove()
    assert _value(app, client, op) == 1  # no bump: the cached one, within CACHE_SECONDS
    monkeypatch.setattr(resolve, "CACHE_SECONDS", 0.0)
    assert _value(app, client, op) == 3
