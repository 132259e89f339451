"""`http` tasks go through the egress policy (issue 11, item 2): loopback, link-local,
the app's own Redis and database, and non-http schemes are refused at every hop; a
refusal fails the task without a retry; a name is resolved once and the checked address
is the one connected to. The suite's config allows loopback (tests.support.app
``LOOPBACK_PEERS``) without a port, which keeps the app's own ports denied."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from werkzeug import Response

from tests.support.engine import drain
from tests.support.runs import get_run, make, run_to_end, start
from tests.support.tls import tls_files

RETRY = {"max_attempts": 3, "delay": "50ms"}


def denied(address: str, port: int) -> str:
    return f"egress to {address}:{port} denied by policy (EGRESS_ALLOW to permit)"


def one_http_task(app, client, op, url, **extra):
    run = run_to_end(app, client, op, [
        {"id": "call", "type": "http", "with": {"url": url, "timeout": "5s", **extra},
         "retry": RETRY}])
    return run["by_task"]["call"]


def assert_refused(task, message):
    assert task["status"] == "failed" and task["attempts"] == 1, task
    assert task["error"] == message


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "017700000001",
                                  "127.1"])
def test_loopback_is_denied_unless_allowed_in_any_spelling(app, client, op, monkeypatch,
                                                           httpserver, host):
    monkeypatch.setitem(app.config, "EGRESS_ALLOW", "")
    httpserver.expect_request("/").respond_with_data("secret page")
    task = one_http_task(app, client, op, f"http://{host}:{httpserver.port}/")
    assert_refused(task, denied("127.0.0.1", httpserver.port))
    assert task["output"] is None and httpserver.log == []


def test_localhost_and_ipv6_loopback_are_denied(app, client, op, monkeypatch, httpserver):
    monkeypatch.setitem(app.config, "EGRESS_ALLOW", "")
    port = httpserver.port
    by_name = one_http_task(app, client, op, f"http://localhost:{port}/")
    assert by_name["error"] in (denied("127.0.0.1", port), denied("[::1]", port))
    assert_refused(by_name, by_name["error"])
    assert_refused(one_http_task(app, client, op, f"http://[::1]:{port}/"),
                   denied("[::1]", port))
    assert_refused(one_http_task(app, client, op, f"http://[::ffff:127.0.0.1]:{port}/"),
                   denied("127.0.0.1", port))


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://[fd00:ec2::254]/latest/meta-data/",
                                 "http://0.0.0.0:8080/"])
def test_cloud_metadata_and_the_unspecified_address_are_denied(app, client, op, url):
    host = urlsplit(url).hostname or ""
    shown = f"[{host}]" if ":" in host else host
    assert_refused(one_http_task(app, client, op, url),
                   denied(shown, urlsplit(url).port or 80))


def own_endpoints(app) -> list[tuple[str, int]]:
    found = []
    for key, default in (("REDIS_URL", 6379), ("SQLALCHEMY_DATABASE_URI", 5432)):
        parts = urlsplit(app.config[key])
        if parts.hostname:
            found.append((parts.hostname, parts.port or default))
    return found


def test_the_apps_own_redis_and_database_stay_denied_while_loopback_is_allowed(
        app, client, op):
    endpoints = own_endpoints(app)
    assert any(port for _, port in endpoints)  # Redis at least (the database if PostgreSQL)
    for host, port in endpoints:
        task = one_http_task(app, client, op, f"http://{host}:{port}/")
        assert_refused(task, denied(socket.gethostbyname(host), port))


def test_an_allow_entry_naming_the_port_opens_it_and_deny_wins(app, client, op, monkeypatch,
                                                              httpserver):
    httpserver.expect_request("/ok").respond_with_json({"fine": True})
    port = httpserver.port
    monkeypatch.setitem(app.config, "EGRESS_ALLOW", f"127.0.0.1:{port}")
    task = one_http_task(app, client, op, f"http://127.0.0.1:{port}/ok")
    assert task["status"] == "succeeded" and task["output"]["json"] == {"fine": True}
    assert_refused(one_http_task(app, client, op, f"http://127.0.0.1:{port + 1}/ok"),
                   denied("127.0.0.1", port + 1))
    monkeypatch.setitem(app.config, "EGRESS_DENY", f"127.0.0.0/8:{port}")
    assert_refused(one_http_task(app, client, op, f"http://127.0.0.1:{port}/ok"),
                   denied("127.0.0.1", port))


def test_every_redirect_hop_is_checked(app, client, op, httpserver):
    redis_host, redis_port = own_endpoints(app)[0]
    httpserver.expect_request("/metadata").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    httpserver.expect_request("/redis").respond_with_data(
        "", status=307, headers={"Location": f"http://{redis_host}:{redis_port}/"})
    httpserver.expect_request("/gopher").respond_with_data(
        "", status=301, headers={"Location": f"gopher://127.0.0.1:{redis_port}/_INFO"})
    assert_refused(one_http_task(app, client, op, httpserver.url_for("/metadata")),
                   denied("169.254.169.254", 80))
    assert_refused(one_http_task(app, client, op, httpserver.url_for("/redis")),
                   denied(socket.gethostbyname(redis_host), redis_port))
    assert_refused(one_http_task(app, client, op, httpserver.url_for("/gopher")),
                   "egress to gopher:// refused: only http and https")


def test_an_allowed_redirect_is_followed_as_before(app, client, op, httpserver):
    httpserver.expect_request("/old", method="POST").respond_with_data(
        "", status=302, headers={"Location": "/new"})
    httpserver.expect_request("/new", method="GET").respond_with_json({"moved": True})
    task = one_http_task(app, client, op, httpserver.url_for("/old"), method="POST",
                         json={"a": 1})
    assert task["status"] == "succeeded", task
    assert task["output"]["json"] == {"moved": True}


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO"])
def test_a_scheme_other_than_http_is_refused(app, client, op, url):
    wid = make(client, op, [
        {"id": "call", "type": "http", "with": {"url": "{{ params.url }}"}, "retry": RETRY},
    ], params={"url": {"type": "string"}})
    run_id = start(client, op, wid, params={"url": url}).get_json()["id"]
    drain(app, run_id)
    task = get_run(client, op, run_id)["by_task"]["call"]
    assert task["status"] == "failed" and task["attempts"] == 1
    # The rendered `with` is checked before the call (the redirect test covers a
    # scheme that only a hop reveals).
    assert "must be an http:// or https:// URL" in task["error"]


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_called(
        app, client, op, monkeypatch, httpserver):
    """A rebinding DNS server answers the check with an allowed address and the
    connection's own lookup with the metadata address: there must be no second lookup."""
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example":
            lookups.append(host)
            host = "127.0.0.1" if len(lookups) == 1 else "169.254.169.254"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    httpserver.expect_request("/who").respond_with_handler(
        lambda request: Response(request.headers.get("Host", "")))
    task = one_http_task(app, client, op, f"http://rebind.example:{httpserver.port}/who",
                         timeout="2s")
    assert task["status"] == "succeeded", task
    assert task["output"]["text"] == f"rebind.example:{httpserver.port}"
    assert lookups == ["rebind.example"]


def test_every_address_a_name_resolves_to_is_checked(app, client, op, monkeypatch,
                                                      httpserver):
    real = socket.getaddrinfo

    def mixed(host, *args, **kwargs):
        if host != "mixed.example":
            return real(host, *args, **kwargs)
        return [*real("127.0.0.1", *args, **kwargs), *real("169.254.169.254", *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    httpserver.expect_request("/").respond_with_data("reached")
    task = one_http_task(app, client, op, f"http://mixed.example:{httpserver.port}/")
    assert_refused(task, denied("169.254.169.254", httpserver.port))
    assert httpserver.log == []


def test_https_goes_to_the_checked_address_and_verifies_the_host_name(
        app, client, op, monkeypatch, tmp_path):
    import ssl

    from pytest_httpserver import HTTPServer

    ca, cert, key = tls_files(tmp_path, "secure.example")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    real = socket.getaddrinfo

    def names(host, *args, **kwargs):  # both names are this machine
        local = host in ("secure.example", "other.example")
        return real("127.0.0.1" if local else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", names)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.expect_request("/hi").respond_with_json({"tls": True})
    server.start()
    try:
        good = one_http_task(app, client, op, f"https://secure.example:{server.port}/hi")
        assert good["status"] == "succeeded", good
        assert good["output"]["json"] == {"tls": True}
        # The certificate is for secure.example: the same server under another name fails.
        bad = one_http_task(app, client, op, f"https://other.example:{server.port}/hi")
    finally:
        server.clear()
        if server.is_running():
            server.stop()
    assert bad["status"] == "failed"
    assert bad["error"].startswith("HTTP connection error: SSLError")
    assert "other.example" in bad["error"]
