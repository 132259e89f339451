"""``s3`` against moto's server mode on loopback (a real HTTP S3 endpoint): put, get,
list and delete, a large object in parts from and to a file, an error without the key."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.runs import run_to_end
from tests.support.s3 import moto_server

KEY_SECRET = "s3-SECRET-key-0a9b8c"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as port:
        yield f"http://127.0.0.1:{port}"


def _bucket(endpoint: str, name: str) -> Any:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="AKIATEST", aws_secret_access_key=KEY_SECRET)
    s3.create_bucket(Bucket=name)
    return s3


def _connection(client: FlaskClient, op: dict[str, Any], endpoint: str) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "lake", "type": "s3",
        "config": {"endpoint_url": endpoint, "region": "us-east-1",
                   "access_key_id": "AKIATEST"},
        "secret": {"secret_access_key": KEY_SECRET}})
    assert r.status_code == 201, r.get_json()
    tested = client.post(f"/api/v1/connections/{r.get_json()['id']}/test", headers=op["h"])
    assert tested.get_json()["ok"] is True, tested.get_json()


def s3(task_id: str, **with_: Any) -> dict[str, Any]:
    return {"id": task_id, "type": "s3", "with": {"connection": "lake", **with_}}


def test_put_get_list_delete(app: Flask, client: FlaskClient, op: dict[str, Any],
                             s3_endpoint: str) -> None:
    peer = _bucket(s3_endpoint, "reports")
    _connection(client, op, s3_endpoint)
    tasks = [s3("put", operation="put", bucket="reports", key="daily/a.json",
                body={"total": 3}, content_type="application/json"),
             s3("bin", operation="put", bucket="reports", key="daily/b.bin",
                body_base64="AAEC/w=="),
             s3("list", operation="list", bucket="reports", prefix="daily/"),
             s3("get", operation="get", bucket="reports", key="daily/a.json"),
             s3("getbin", operation="get", bucket="reports", key="daily/b.bin"),
             s3("del", operation="delete", bucket="reports", key="daily/b.bin"),
             s3("missing", operation="get", bucket="reports", key="nope")]
    chained = [tasks[0]] + [{**t, "depends_on": [tasks[i]["id"]]} for i, t in enumerate(tasks[1:])]
    chained[-1]["trigger_rule"] = "all_done"
    run = run_to_end(app, client, op, chained)
    out = {k: v.get("output") for k, v in run["by_task"].items()}
    assert out["put"]["size"] == len('{"total": 3}')
    assert out["list"]["keys"] == ["daily/a.json", "daily/b.bin"]
    assert out["get"]["body"] == '{"total": 3}' and out["get"]["content_type"] == "application/json"
    assert out["getbin"]["body_base64"] == "AAEC/w==" and out["getbin"]["size"] == 4
    assert out["del"] == {"deleted": True}
    assert "NoSuchKey" in run["by_task"]["missing"]["error"] or "404" in run["by_task"][
        "missing"]["error"]
    keys = [o["Key"] for o in peer.list_objects_v2(Bucket="reports").get("Contents", [])]
    assert keys == ["daily/a.json"]


def test_a_large_object_in_parts_from_and_to_files(app: Flask, client: FlaskClient,
                                                   op: dict[str, Any],
                                                   s3_endpoint: str) -> None:
    peer = _bucket(s3_endpoint, "big")
    _connection(client, op, s3_endpoint)
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    data = os.urandom(20 * 1024 * 1024)
    (files / "big.bin").write_bytes(data)
    run = run_to_end(app, client, op, [
        s3("up", operation="put", bucket="big", key="b.bin", file="big.bin"),
        {**s3("down", operation="get", bucket="big", key="b.bin", file="copy/big.bin"),
         "depends_on": ["up"]},
        s3("outside", operation="put", bucket="big", key="x", file="../apg.db")])
    tasks = run["by_task"]
    assert tasks["up"]["output"]["size"] == len(data)
    assert tasks["up"]["output"]["etag"].endswith("-3")  # three 8 MiB parts
    assert tasks["down"]["output"]["size"] == len(data)
    copied = (files / "copy" / "big.bin").read_bytes()
    assert hashlib.sha256(copied).digest() == hashlib.sha256(data).digest()
    assert "outside CONNECTION_FILES_DIR" in tasks["outside"]["error"]
    assert peer.head_object(Bucket="big", Key="b.bin")["ContentLength"] == len(data)


def test_an_error_never_shows_the_secret(app: Flask, client: FlaskClient,
                                                   op: dict[str, Any],
                                                   s3_endpoint: str) -> None:
    _bucket(s3_endpoint, "guarded")
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "lake", "type": "s3",
        "config": {"endpoint_url": s3_endpoint, "access_key_id": "AKIATEST"},
        "secret": {"secret_access_key": KEY_SECRET}})
    assert r.status_code == 201
    run = run_to_end(app, client, op, [s3("a", operation="get", bucket="no-such-bucket",
                                          key="k")])
    assert run["status"] == "failed" and KEY_SECRET not in str(run)
