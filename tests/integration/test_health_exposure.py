"""What ``/health`` and the ``Server`` header tell an anonymous caller, and the worker
check: a configured queue without a live worker fails once the start-up grace is over."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from rq import Queue, Worker

from app import create_app
from app.runtime.redis_conn import get_redis
from tests.support.app import api_token, auth, make_config, serving, unique


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def queues(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Queues of this test only, past the grace: no worker of another test serves them."""
    names = [unique("hq-a"), unique("hq-b")]
    monkeypatch.setitem(app.config, "RQ_QUEUES", names)
    monkeypatch.setitem(app.config, "HEALTH_WORKER_GRACE", 0)
    return names


@pytest.fixture()
def viewer_headers(client: Any, factory: Any) -> dict[str, str]:
    return auth(api_token(client, factory.user("Viewer")["username"]))


def _live_workers(app: Flask) -> int:
    with app.app_context():
        return len(Worker.all(connection=get_redis(app)))


def test_anonymous_health_says_only_ok_or_error(app, client, service_urls, monkeypatch):
    monkeypatch.setitem(app.config, "HEALTH_WORKER_GRACE", 3600)
    r = client.get("/health")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}
    broken = create_app(make_config(
        service_urls, REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"))
    r = broken.test_client().get("/health")
    assert r.status_code == 503 and r.get_json() == {"status": "error"}


def test_a_signed_in_user_gets_the_details(app, client, monkeypatch, viewer_headers):
    monkeypatch.setitem(app.config, "HEALTH_WORKER_GRACE", 3600)
    body = client.get("/health", headers=viewer_headers).get_json()
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert isinstance(body["checks"]["workers"], int)


def test_no_worker_on_a_queue_is_503_once_the_grace_is_over(app, client, queues, viewer_headers,
                                                            monkeypatch):
    r = client.get("/health")
    assert r.status_code == 503 and r.get_json() == {"status": "error"}
    r = client.get("/health", headers=viewer_headers)
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "error" and body["failing"] == ["workers"]
    assert body["checks"]["workers"] == _live_workers(app)
    assert body["queues_without_workers"] == queues
    # Within the grace (a start: `up` and its workers come up together) it is still ok.
    monkeypatch.setitem(app.config, "HEALTH_WORKER_GRACE", 3600)
    assert client.get("/health").status_code == 200


def test_a_live_worker_on_every_queue_makes_it_ok(app, client, queues, viewer_headers):
    conn = get_redis(app)
    first = Worker([Queue(queues[0], connection=conn)], connection=conn, name=unique("w"))
    first.register_birth()
    try:
        body = client.get("/health", headers=viewer_headers).get_json()
        assert body["status"] == "error" and body["queues_without_workers"] == queues[1:]
        second = Worker([Queue(queues[1], connection=conn)], connection=conn, name=unique("w"))
        second.register_birth()
        try:
            r = client.get("/health", headers=viewer_headers)
            assert r.status_code == 200, r.get_json()
            assert r.get_json()["checks"]["workers"] >= 2
            assert client.get("/health").get_json() == {"status": "ok"}
        finally:
            second.register_death()
    finally:
        first.register_death()


@pytest.fixture()
def up_server(app: Flask) -> Iterator[str]:
    """The app behind the request handler `flask --app app up` serves it with."""
    from app.runtime.up import AccessLogRequestHandler

    with serving(app, request_handler=AccessLogRequestHandler) as base:
        yield base


def _raw(base: str, request_line: bytes) -> str:
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        return sock.recv(65536).decode("latin-1")


def test_the_server_header_names_no_product_or_version(up_server):
    seen = [requests.get(up_server + path, timeout=10).headers.get("Server")
            for path in ("/login/", "/health", "/no-such-page",
                         "/socket.io/?EIO=4&transport=polling")]
    head = _raw(up_server, b"BOGUS / HTTP/1.1").split("\r\n\r\n")[0]
    seen.append(next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                     if line.lower().startswith("server:")))
    assert seen == ["APG"] * 5, seen
