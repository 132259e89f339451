"""The ``redis`` connector on the machine's Redis, in a database number of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import LOOPBACK_PEERS
from tests.support.runs import run_to_end

DB = 14


@pytest.fixture()
def own_redis(app: Flask) -> Iterator[redis.Redis]:
    """The machine's Redis may be the app's own endpoint: allowed by port for the test."""
    before = app.config["EGRESS_ALLOW"]
    app.config["EGRESS_ALLOW"] = f"{LOOPBACK_PEERS} 127.0.0.1:6379"
    client = redis.Redis(host="127.0.0.1", port=6379, db=DB, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    app.config["EGRESS_ALLOW"] = before


def test_commands_on_a_database_of_its_own(app: Flask, client: FlaskClient,
                                           op: dict[str, Any], own_redis: redis.Redis) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "cache", "type": "redis",
        "config": {"url": f"redis://127.0.0.1:6379/{DB}"}})
    assert r.status_code == 201, r.get_json()
    test = client.post(f"/api/v1/connections/{r.get_json()['id']}/test", headers=op["h"])
    assert test.get_json()["ok"] is True and "Redis" in test.get_json()["message"]

    def cmd(task_id: str, **with_: Any) -> dict[str, Any]:
        return {"id": task_id, "type": "redis", "with": {"connection": "cache", **with_}}

    tasks = [cmd("set", command="set", key="k", value={"a": 1}, ttl=60),
             cmd("get", command="get", key="k"),
             cmd("incr", command="incr", key="n", value=5),
             cmd("push", command="lpush", key="l", value=["x", "y"]),
             cmd("pop", command="rpop", key="l"),
             cmd("hset", command="hset", key="h", field="f", value="v"),
             cmd("hall", command="hgetall", key="h"),
             cmd("pub", command="publish", channel="c", value="hi"),
             cmd("del", command="delete", key="k")]
    chained = [tasks[0]] + [{**t, "depends_on": [tasks[i]["id"]]}
                            for i, t in enumerate(tasks[1:])]
    run = run_to_end(app, client, op, chained)
    assert run["status"] == "succeeded", {k: v.get("error") for k, v in run["by_task"].items()}
    out = {k: v["output"]["result"] for k, v in run["by_task"].items()}
    assert out == {"set": True, "get": '{"a": 1}', "incr": 5, "push": 2, "pop": "x",
                   "hset": 1, "hall": {"f": "v"}, "pub": 0, "del": 1}
    assert own_redis.get("n") == "5" and own_redis.hgetall("h") == {"f": "v"}


def test_a_wrong_type_is_a_task_failure_and_a_missing_key_a_422(
        app: Flask, client: FlaskClient, op: dict[str, Any], own_redis: redis.Redis) -> None:
    client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "cache", "type": "redis",
        "config": {"url": f"redis://127.0.0.1:6379/{DB}"}})
    own_redis.set("s", "text")
    run = run_to_end(app, client, op, [{"id": "a", "type": "redis", "with": {
        "connection": "cache", "command": "hgetall", "key": "s"}}])
    assert run["status"] == "failed" and "WRONGTYPE" in run["by_task"]["a"]["error"]
    r = client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"], "definition": {"name": "x", "tasks": [
            {"id": "a", "type": "redis", "with": {"connection": "cache", "command": "get"}}]}})
    assert r.status_code == 422 and "get needs key" in str(r.get_json())
