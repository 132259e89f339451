"""The ``sql`` connector against the real databases of this machine: PostgreSQL, MariaDB
and SQLite. Parameters are bound (an injection attempt stays data), rows are limited,
a statement past its timeout stops, the connection's secret is masked in outputs, and a
task may name only a connection of its own team."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import Factory, api_token, auth
from tests.support.connections import SECRET, own_postgres, postgres_body
from tests.support.runs import run_to_end

__all__ = ["own_postgres"]  # a fixture, used by name

PG_DB = "apg_sqlconn_test"
MARIA_DB = "apg_sqlconn_test"
MARIA_USER = "apg_sqlconn"
INJECTION = "x'); DROP TABLE items; --"


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{PG_DB}"'))
    yield PG_DB
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def maria_database() -> Iterator[str]:
    """A database and a user of it whose password is ``SECRET``."""
    admin = sa.create_engine("mysql+pymysql://root@127.0.0.1:3306/")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {MARIA_DB}"))
        conn.execute(sa.text(f"CREATE DATABASE {MARIA_DB}"))
        conn.execute(sa.text(f"DROP USER IF EXISTS '{MARIA_USER}'@'%'"))
        conn.execute(sa.text(f"CREATE USER '{MARIA_USER}'@'%' IDENTIFIED BY '{SECRET}'"))
        conn.execute(sa.text(f"GRANT ALL ON {MARIA_DB}.* TO '{MARIA_USER}'@'%'"))
    yield MARIA_DB
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {MARIA_DB}"))
        conn.execute(sa.text(f"DROP USER IF EXISTS '{MARIA_USER}'@'%'"))
    admin.dispose()


def _connection(client: FlaskClient, op: dict[str, Any], body: dict[str, Any]) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json=body)
    assert r.status_code == 201, r.get_json()


def sql(task_id: str, query: str, **with_: Any) -> dict[str, Any]:
    retry = with_.pop("retry", None)
    return {"id": task_id, "type": "sql",
            "with": {"connection": with_.pop("connection", "db"), "query": query, **with_},
            **({"retry": retry} if retry else {})}


def _chain(*tasks: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, task in enumerate(tasks):
        out.append({**task, "depends_on": [tasks[i - 1]["id"]]} if i else task)
    return out


def _crud(app: Flask, client: FlaskClient, op: dict[str, Any], kind: str) -> dict[str, Any]:
    text_type = "VARCHAR(200)" if kind == "mysql" else "TEXT"
    return run_to_end(app, client, op, _chain(
        sql("make", f"CREATE TABLE items (id INTEGER PRIMARY KEY, name {text_type})",
            fetch="none"),
        sql("add", "INSERT INTO items (id, name) VALUES (1, :a), (2, :b), (3, :c)",
            params={"a": "apple", "b": "pear", "c": INJECTION}, fetch="none"),
        sql("find", "SELECT id, name FROM items WHERE name = :name ORDER BY id",
            params={"name": INJECTION}),
        sql("none", "SELECT id FROM items WHERE name = :name", params={"name": "x' OR '1'='1"}),
        sql("one", "SELECT count(*) AS n FROM items", fetch="one"),
        sql("leak", f"SELECT '{SECRET}' AS leaked"),
    ))


def _check_crud(run: dict[str, Any]) -> None:
    assert run["status"] == "succeeded", {k: t.get("error") for k, t in run["by_task"].items()}
    tasks = run["by_task"]
    assert tasks["add"]["output"]["rowcount"] == 3
    assert tasks["find"]["output"]["rows"] == [{"id": 3, "name": INJECTION}]
    assert tasks["find"]["output"]["columns"] == ["id", "name"]
    assert tasks["none"]["output"]["rows"] == []
    assert tasks["one"]["output"]["row"] == {"n": 3}
    assert tasks["leak"]["output"]["rows"] == [{"leaked": "***"}]


def test_postgres(app: Flask, client: FlaskClient, op: dict[str, Any], pg_database: str,
                  own_postgres: None) -> None:
    _connection(client, op, postgres_body(op, "db", database=pg_database))
    run = _crud(app, client, op, "postgres")
    _check_crud(run)
    # The table survived the injection attempt; too many rows fail, not retried; a
    # statement past its timeout stops.
    run = run_to_end(app, client, op, [
        sql("count", "SELECT count(*) AS n FROM items", fetch="one"),
        sql("many", "SELECT generate_series(1, 50) AS n", max_rows=10,
            retry={"max_attempts": 3, "delay": "50ms"}),
        sql("slow", "SELECT pg_sleep(5)", timeout=1, retry={"max_attempts": 1}),
        # The same pooled connection after a 1 s statement: its timeout is the task's
        # again (the session's setting is kept between tasks, never a shorter one).
        {**sql("after", "SELECT 1 AS slept FROM pg_sleep(1.3)", fetch="one"),
         "depends_on": ["slow"], "trigger_rule": "all_done"},
    ])
    tasks = run["by_task"]
    assert tasks["after"]["output"]["row"] == {"slept": 1}, tasks["after"]
    assert tasks["count"]["output"]["row"] == {"n": 3}
    assert tasks["many"]["status"] == "failed" and tasks["many"]["attempts"] == 1
    assert "more than max_rows (10)" in tasks["many"]["error"]
    assert tasks["slow"]["status"] == "failed"
    assert "statement timeout" in tasks["slow"]["error"]


def test_mariadb(app: Flask, client: FlaskClient, op: dict[str, Any],
                 maria_database: str) -> None:
    config = {"host": "127.0.0.1", "port": 3306, "database": maria_database,
              "username": MARIA_USER}
    _connection(client, op, {"team": op["team"]["name"], "name": "db", "type": "mysql",
                             "config": config, "secret": {"password": SECRET}})
    _check_crud(_crud(app, client, op, "mysql"))
    _connection(client, op, {"team": op["team"]["name"], "name": "wrong", "type": "mysql",
                             "config": config, "secret": {"password": "not-it"}})
    run = run_to_end(app, client, op, [sql("a", "SELECT 1", connection="wrong",
                                           retry={"max_attempts": 3, "delay": "50ms"})])
    task = run["by_task"]["a"]
    assert task["status"] == "failed" and task["attempts"] == 1  # bad credentials: no retry
    assert "Access denied" in task["error"]


def test_sqlite_under_the_files_directory_only(app: Flask, client: FlaskClient,
                                               op: dict[str, Any]) -> None:
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    name = f"{op['team']['name']}.db"
    sqlite3.connect(files / name).close()
    _connection(client, op, {"team": op["team"]["name"], "name": "db", "type": "sqlite",
                             "config": {"path": name}})
    _connection(client, op, {"team": op["team"]["name"], "name": "outside",
                             "type": "sqlite", "config": {"path": "../apg.db"}})
    run = _crud(app, client, op, "sqlite")
    assert run["status"] == "succeeded", {k: t.get("error") for k, t in run["by_task"].items()}
    assert run["by_task"]["find"]["output"]["rows"] == [{"id": 3, "name": INJECTION}]
    run = run_to_end(app, client, op, [sql("a", "SELECT 1", connection="outside")])
    assert run["status"] == "failed"
    assert "outside CONNECTION_FILES_DIR" in run["by_task"]["a"]["error"]


def test_only_a_connection_of_the_runs_team(app: Flask, client: FlaskClient,
                                            factory: Factory, op: dict[str, Any]) -> None:
    other = {"team": factory.team()}
    other["h"] = auth(api_token(client, factory.user("Author", teams=[other["team"]])
                                ["username"]))
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(files / "theirs.db").close()
    _connection(client, other, {"team": other["team"]["name"], "name": "theirs",
                                "type": "sqlite", "config": {"path": "theirs.db"}})
    run = run_to_end(app, client, op, [
        sql("a", "SELECT 1", connection="theirs", retry={"max_attempts": 3, "delay": "50ms"}),
        sql("b", "SELECT 1", connection="nowhere")])
    for task_id, name in (("a", "theirs"), ("b", "nowhere")):
        task = run["by_task"][task_id]
        assert task["status"] == "failed" and task["attempts"] == 1
        assert task["error"] == f"unknown connection {name!r}"
