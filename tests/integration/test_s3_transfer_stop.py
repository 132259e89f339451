"""A large S3 transfer stops when its attempt times out or is cancelled (issue 13, item
6), against moto's server behind a slow link (``slow_proxy``: 2 MB/s, so a 24 MB upload
would take 12 s): the task ends within seconds, and the server shows the multipart
upload aborted (no object, no upload left open) — what S3's protocol lets a client undo."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.runs import make, run_to_end, start, wait_for
from tests.support.s3 import moto_server
from tests.support.slow_proxy import slow_proxy

KEY_SECRET = "s3-stop-secret-5e1d"
SIZE = 24 * 1024 * 1024
RATE = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    with moto_server() as port:
        yield port


@pytest.fixture()
def slow_s3(app: Flask, client: FlaskClient, op: dict[str, Any],
            moto_port: int) -> Iterator[Any]:
    """The team's connection `lake` through the slow link; the direct client to check."""
    peer = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}",
                        region_name="us-east-1", aws_access_key_id="AKIATEST",
                        aws_secret_access_key=KEY_SECRET)
    bucket = f"stop-{op['team']['name']}"
    peer.create_bucket(Bucket=bucket)
    with slow_proxy(moto_port, RATE) as port:
        r = client.post("/api/v1/connections/", headers=op["h"], json={
            "team": op["team"]["name"], "name": "lake", "type": "s3",
            "config": {"endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1",
                       "access_key_id": "AKIATEST"},
            "secret": {"secret_access_key": KEY_SECRET}})
        assert r.status_code == 201, r.get_json()
        files = Path(app.config["CONNECTION_FILES_DIR"])
        files.mkdir(parents=True, exist_ok=True)
        (files / "huge.bin").write_bytes(os.urandom(SIZE))
        yield peer, bucket


def _left_behind(peer: Any, bucket: str) -> tuple[list[str], list[str]]:
    keys = [o["Key"] for o in peer.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in peer.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys, uploads




def upload(bucket: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": "up", "type": "s3", **extra,
             "with": {"connection": "lake", "operation": "put", "bucket": bucket,
                      "key": "huge.bin", "file": "huge.bin"}}]


def test_a_timeout_stops_a_large_upload_and_aborts_it_on_the_server(
        app: Flask, client: FlaskClient, op: dict[str, Any], slow_s3: Any) -> None:
    peer, bucket = slow_s3
    t0 = time.monotonic()
    run = run_to_end(app, client, op, upload(bucket, timeout="2s"))
    took = time.monotonic() - t0
    task = run["by_task"]["up"]
    assert task["status"] == "failed", task
    assert "timeout" in task["error"] or "timed out" in task["error"], task["error"]
    assert took < SIZE / RATE - 4, took  # stopped, not carried on to its end
    assert wait_for(lambda: _left_behind(peer, bucket) == ([], []), 15)


@pytest.fixture()
def worker(processes: Any) -> None:
    processes("worker")


def test_a_cancel_stops_a_large_upload_and_aborts_it_on_the_server(
        app: Flask, client: FlaskClient, op: dict[str, Any], slow_s3: Any,
        worker: None) -> None:
    peer, bucket = slow_s3
    wid = make(client, op, upload(bucket))
    run_id = start(client, op, wid).get_json()["id"]
    # The upload has begun on the server: a multipart upload is open.
    wait_for(lambda: _left_behind(peer, bucket)[1] == ["huge.bin"], 30)
    t0 = time.monotonic()
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=op["h"]).status_code == 200
    assert wait_for(lambda: _left_behind(peer, bucket) == ([], []), 15)
    assert time.monotonic() - t0 < SIZE / RATE - 4
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert got["status"] == "cancelled"
