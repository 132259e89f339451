"""The ``http`` task through an ``http`` connection and over pages, against a real HTTP
peer (pytest-httpserver) playing both the API and its OAuth2 token endpoint: basic,
bearer and API-key authentication, a path joined to the base URL, OAuth2 tokens asked
for once and cached across runs, renewed once on a 401, the token endpoint's errors
classed; Link-header and cursor pagination bounded by max_pages; and no access token or
client secret in what the run shows."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support.runs import run_to_end

PASSWORD = "pw-HTTP-SECRET-31b7"
TOKEN = "tok-HTTP-SECRET-8d2e"
API_KEY = "key-HTTP-SECRET-c41a"
CLIENT_SECRET = "cs-HTTP-SECRET-5f09"
REFRESH = "rt-HTTP-SECRET-a7e3"
ACCESS = "ACCESS-TOKEN-e61d"  # in every access token the endpoint hands out


def _connection(client: FlaskClient, op: dict[str, Any], name: str, config: dict[str, Any],
                secret: dict[str, Any] | None = None) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": name, "type": "http", "config": config,
        "secret": secret or {}})
    assert r.status_code == 201, r.get_json()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json",
                    headers=headers or {})


def _errors(run: dict[str, Any]) -> dict[str, Any]:
    return {k: (v["status"], v.get("error")) for k, v in run["by_task"].items()}


def test_basic_bearer_and_api_key_through_a_connection(app: Flask, client: FlaskClient,
                                                       op: dict[str, Any],
                                                       httpserver: HTTPServer) -> None:
    base = httpserver.url_for("/api/v2")
    _connection(client, op, "basic", {"base_url": base, "auth": "basic", "username": "etl",
                                      "headers": {"X-Team": "data", "Accept": "text/plain"}},
                {"password": PASSWORD})
    _connection(client, op, "bearer", {"base_url": base + "/", "auth": "bearer"},
                {"token": TOKEN})
    _connection(client, op, "keyed", {"base_url": base, "auth": "api_key",
                                      "api_key_header": "X-Api-Key"}, {"api_key": API_KEY})
    basic = "Basic " + base64.b64encode(f"etl:{PASSWORD}".encode()).decode()
    # The connection's headers are defaults: with.headers overrides Accept.
    httpserver.expect_request("/api/v2/orders", query_string="since=2024", headers={
        "Authorization": basic, "X-Team": "data", "Accept": "application/json"},
    ).respond_with_json({"orders": [1, 2]})
    httpserver.expect_request("/api/v2/me", headers={"Authorization": f"Bearer {TOKEN}"}
                              ).respond_with_json({"me": "bot"})
    httpserver.expect_request("/api/v2/items/7", method="POST", headers={
        "X-Api-Key": API_KEY}, json={"qty": 1}).respond_with_json({"ok": True}, status=201)
    httpserver.expect_request("/api/v2/none").respond_with_data("no", status=404)
    run = run_to_end(app, client, op, [
        {"id": "basic", "type": "http", "with": {
            "connection": "basic", "url": "orders", "params": {"since": 2024},
            "headers": {"accept": "application/json"}}},
        # A leading "/" stays under the base URL's path, as with the webhook task.
        {"id": "bearer", "type": "http", "with": {"connection": "bearer", "url": "/me"}},
        {"id": "keyed", "type": "http", "with": {
            "connection": "keyed", "method": "POST", "url": "items/7", "json": {"qty": 1}}},
        {"id": "absolute", "type": "http", "with": {
            "connection": "bearer", "url": httpserver.url_for("/api/v2/me")}},
        {"id": "missing", "type": "http", "retry": {"max_attempts": 2, "delay": "50ms"},
         "with": {"connection": "keyed", "url": "none"}},
        # Another origin would get the connection's credentials: refused, not retried.
        {"id": "elsewhere", "type": "http", "retry": {"max_attempts": 2, "delay": "50ms"},
         "with": {"connection": "bearer", "url": "https://elsewhere.example/steal"}},
    ])
    tasks = run["by_task"]
    assert tasks["basic"]["output"]["json"] == {"orders": [1, 2]}, _errors(run)
    assert tasks["bearer"]["output"]["json"] == {"me": "bot"}
    assert tasks["keyed"]["output"]["status"] == 201
    assert tasks["absolute"]["output"]["json"] == {"me": "bot"}
    assert tasks["missing"]["attempts"] == 1
    assert tasks["missing"]["error"] == f"HTTP 404 from {base}/none"
    assert tasks["elsewhere"]["attempts"] == 1
    assert "is not on the connection's base_url origin" in tasks["elsewhere"]["error"]
    text = json.dumps(run)
    assert all(value not in text for value in (PASSWORD, TOKEN, API_KEY))


class TokenEndpoint:
    """An OAuth2 token endpoint: checks the client's authentication, hands out
    tok-1, tok-2... (or the replies it is told to give), and records each request."""

    def __init__(self, replies: list[tuple[int, dict[str, Any]]] | None = None,
                 expires_in: int = 3600) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies = list(replies or [])
        self.expires_in = expires_in

    def __call__(self, request: Request) -> Response:
        form = request.form.to_dict()
        header = request.headers.get("Authorization", "")
        client = None
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            client = (unquote_plus(user), unquote_plus(password))
        self.requests.append({"form": form, "client": client})
        if self.replies:
            status, body = self.replies.pop(0)
            return _json(body, status)
        if client != ("app-1", CLIENT_SECRET) and (
                form.get("client_id"), form.get("client_secret")) != ("app-1", CLIENT_SECRET):
            return _json({"error": "invalid_client"}, 401)
        number = len(self.requests)
        body = {"access_token": f"AT-{number}-{ACCESS}", "token_type": "Bearer",
                "expires_in": self.expires_in}
        if form.get("grant_type") == "refresh_token":
            body["refresh_token"] = f"RT-{number}-rotated"
        return _json(body)


def _api(accepted: Callable[[], set[str]], seen: list[str]) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        seen.append(token)
        if token not in accepted():
            return _json({"error": "invalid_token"}, 401)
        # An API that echoes the request's credentials: masked in the stored output.
        return _json({"ok": True, "you_sent": request.headers.get("Authorization")},
                     headers={"X-Echo": token})
    return handle


def _oauth2(server: HTTPServer, **config: Any) -> dict[str, Any]:
    return {"base_url": server.url_for("/api"), "auth": "oauth2_client_credentials",
            "token_url": server.url_for("/oauth/token"), "client_id": "app-1", **config}


def test_client_credentials_token_is_cached_and_renewed_on_a_401(
        app: Flask, client: FlaskClient, op: dict[str, Any], httpserver: HTTPServer) -> None:
    endpoint = TokenEndpoint()
    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(endpoint)
    accepted = {f"AT-1-{ACCESS}"}
    seen: list[str] = []
    httpserver.expect_request("/api/data").respond_with_handler(_api(lambda: accepted, seen))
    _connection(client, op, "oauth", _oauth2(httpserver, scopes=["read", "write"]),
                {"client_secret": CLIENT_SECRET})
    task = {"id": "get", "type": "http", "with": {"connection": "oauth", "url": "data"}}
    first = run_to_end(app, client, op, [task, {**task, "id": "again", "depends_on": ["get"]}])
    second = run_to_end(app, client, op, [task])
    assert first["status"] == second["status"] == "succeeded", (_errors(first),
                                                                _errors(second))
    # One token for three requests in two runs: the endpoint saw one request, with the
    # client authenticated by HTTP Basic (RFC 6749 2.3.1) and the scopes.
    assert endpoint.requests == [{"form": {"grant_type": "client_credentials",
                                           "scope": "read write"},
                                  "client": ("app-1", CLIENT_SECRET)}]
    assert seen == [f"AT-1-{ACCESS}"] * 3
    # The token is revoked: the cached one gets a 401, a new one is asked for, and the
    # request is sent once more with it.
    accepted = {f"AT-2-{ACCESS}"}
    renewed = run_to_end(app, client, op, [task])
    assert renewed["status"] == "succeeded", _errors(renewed)
    assert renewed["by_task"]["get"]["attempts"] == 1
    assert seen[3:] == [f"AT-1-{ACCESS}", f"AT-2-{ACCESS}"]
    assert len(endpoint.requests) == 2
    # The API echoed the token (body and header): masked, as the client secret is.
    output = renewed["by_task"]["get"]["output"]
    assert output["json"] == {"ok": True, "you_sent": "Bearer ***"}
    assert output["headers"]["X-Echo"] == "***"
    # A token that still gets a 401 is retried once, not more: the task fails, not
    # retried (a 401 is no transient failure).
    accepted = set()
    refused = run_to_end(app, client, op, [{**task, "retry": {"max_attempts": 3,
                                                              "delay": "50ms"}}])
    assert refused["by_task"]["get"]["attempts"] == 1
    assert refused["by_task"]["get"]["error"] == f"HTTP 401 from {httpserver.url_for('/api')}/data"
    assert len(endpoint.requests) == 3 and len(seen) == 7
    for shown in (first, second, renewed, refused):
        text = json.dumps(shown)
        assert CLIENT_SECRET not in text and ACCESS not in text


def test_token_endpoint_errors_are_classed(app: Flask, client: FlaskClient,
                                           op: dict[str, Any], httpserver: HTTPServer) -> None:
    endpoint = TokenEndpoint(replies=[
        (401, {"error": "invalid_client", "error_description": "Client authentication failed"}),
        (503, {"error": "temporarily_unavailable"}),
        (503, {"error": "temporarily_unavailable"})])
    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(endpoint)
    httpserver.expect_request("/api/data").respond_with_json({"never": "reached"})
    _connection(client, op, "oauth", _oauth2(httpserver, client_auth="body"),
                {"client_secret": CLIENT_SECRET})
    _connection(client, op, "denied", _oauth2(
        httpserver, token_url="http://169.254.169.254/oauth/token"),
        {"client_secret": CLIENT_SECRET})
    retry = {"max_attempts": 2, "delay": "50ms"}
    run = run_to_end(app, client, op, [
        {"id": "bad", "type": "http", "retry": retry,
         "with": {"connection": "oauth", "url": "data"}},
        {"id": "down", "type": "http", "retry": retry, "depends_on": ["bad"],
         "trigger_rule": "all_done", "with": {"connection": "oauth", "url": "data"}},
        {"id": "egress", "type": "http", "retry": retry,
         "with": {"connection": "denied", "url": "data"}},
    ])
    tasks = run["by_task"]
    token_url = httpserver.url_for("/oauth/token")
    assert tasks["bad"]["attempts"] == 1
    assert tasks["bad"]["error"] == (f"token endpoint {token_url}: HTTP 401: invalid_client: "
                                     "Client authentication failed")
    assert tasks["down"]["attempts"] == 2
    assert tasks["down"]["error"] == (f"token endpoint {token_url}: HTTP 503: "
                                      "temporarily_unavailable")
    # client_auth: body sends the client's id and secret in the form.
    assert endpoint.requests[0]["form"] == {"grant_type": "client_credentials",
                                            "client_id": "app-1",
                                            "client_secret": CLIENT_SECRET}
    assert endpoint.requests[0]["client"] is None
    # The token endpoint is called through the egress policy too.
    assert tasks["egress"]["attempts"] == 1 and "denied by policy" in tasks["egress"]["error"]
    assert CLIENT_SECRET not in json.dumps(run)


def test_refresh_token_grant_follows_a_rotated_refresh_token(
        app: Flask, client: FlaskClient, op: dict[str, Any], httpserver: HTTPServer) -> None:
    # expires_in 0: every task asks for a token, so the second one shows which refresh
    # token was sent.
    endpoint = TokenEndpoint(expires_in=0)
    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(endpoint)
    seen: list[str] = []
    httpserver.expect_request("/api/data").respond_with_handler(
        _api(lambda: set(seen), seen))
    _connection(client, op, "refresh", _oauth2(httpserver, auth="oauth2_refresh_token"),
                {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH})
    task = {"id": "one", "type": "http", "with": {"connection": "refresh", "url": "data"}}
    run = run_to_end(app, client, op, [task, {**task, "id": "two", "depends_on": ["one"]}])
    assert run["status"] == "succeeded", _errors(run)
    assert [r["form"] for r in endpoint.requests] == [
        {"grant_type": "refresh_token", "refresh_token": REFRESH},
        {"grant_type": "refresh_token", "refresh_token": "RT-1-rotated"}]
    assert seen == [f"AT-1-{ACCESS}", f"AT-2-{ACCESS}"]
    text = json.dumps(run)
    assert REFRESH not in text and ACCESS not in text


def test_pages_by_link_header_and_by_cursor(app: Flask, client: FlaskClient,
                                            op: dict[str, Any],
                                            httpserver: HTTPServer) -> None:
    def linked(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        headers = {}
        if page < 3:  # relative links, resolved against the page's URL
            headers["Link"] = (f'</api/items?page=1>; rel="first", '
                               f'<items?page={page + 1}&per_page=2>; rel="next"')
        return _json([{"id": 2 * page - 1}, {"id": 2 * page}], headers=headers)

    def cursored(request: Request) -> Response:
        assert request.args.get("limit") == "2"
        cursor = request.args.get("after")
        pages = {None: ("c2", ["a", "b"]), "c2": ("c3", ["c", "d"]), "c3": (None, ["e"])}
        following, names = pages[cursor]
        return _json({"data": [{"name": n} for n in names],
                      "meta": {"next_cursor": following}})

    httpserver.expect_request("/api/items").respond_with_handler(linked)
    httpserver.expect_request("/api/people").respond_with_handler(cursored)
    _connection(client, op, "api", {"base_url": httpserver.url_for("/api"), "auth": "bearer"},
                {"token": TOKEN})
    cursor = {"path": "meta.next_cursor", "param": "after"}
    run = run_to_end(app, client, op, [
        {"id": "link", "type": "http", "with": {
            "url": httpserver.url_for("/api/items"), "paginate": {"type": "link"}}},
        {"id": "cursor", "type": "http", "with": {
            "connection": "api", "url": "people", "params": {"limit": 2},
            "paginate": {"cursor": cursor, "items_path": "$.data[*].name"}}},
        {"id": "jsonpath", "type": "http", "with": {
            "connection": "api", "url": "people", "params": {"limit": 2},
            "paginate": {"cursor": {"path": "$.meta.next_cursor", "param": "after"},
                         "items_path": "$.data"}}},
        {"id": "bounded", "type": "http", "with": {
            "url": httpserver.url_for("/api/items"), "params": {"page": 1},
            "paginate": {"type": "link", "max_pages": 2}}},
        {"id": "pages", "type": "http", "with": {
            "connection": "api", "url": "people", "params": {"limit": 2},
            "paginate": {"cursor": cursor}}},
    ])
    tasks = run["by_task"]
    assert run["status"] == "succeeded", _errors(run)
    assert tasks["link"]["output"] == {"pages": 3, "items": [{"id": i} for i in range(1, 7)]}
    assert tasks["cursor"]["output"] == {"pages": 3, "items": ["a", "b", "c", "d", "e"]}
    assert tasks["jsonpath"]["output"]["items"] == [{"name": n} for n in "abcde"]
    assert tasks["bounded"]["output"] == {"pages": 2,
                                          "items": [{"id": i} for i in range(1, 5)]}
    # Without items_path, an object page is one item.
    assert [page["meta"]["next_cursor"] for page in tasks["pages"]["output"]["items"]] == [
        "c2", "c3", None]
    cursors = [r.args.get("after") for r, _ in httpserver.log if r.path == "/api/people"]
    assert cursors == [None, "c2", "c3"] * 3
    # Each page has an idempotency key of its own, the first the attempt's.
    first, second, third = [r.headers["Idempotency-Key"] for r, _ in httpserver.log
                            if r.path == "/api/items"][:3]
    assert (second, third) == (f"{first}.2", f"{first}.3")


def test_a_failing_page_fails_the_task_and_a_link_elsewhere_is_not_followed(
        app: Flask, client: FlaskClient, op: dict[str, Any], httpserver: HTTPServer) -> None:
    def flaky(request: Request) -> Response:
        if request.args.get("page") == "2":
            return _json({"error": "busy"}, 503)
        return _json([1], headers={"Link": '<?page=2>; rel="next"'})

    httpserver.expect_request("/flaky").respond_with_handler(flaky)
    httpserver.expect_request("/away").respond_with_json(
        [1], headers={"Link": '<https://elsewhere.example/x>; rel="next"'})
    httpserver.expect_request("/text").respond_with_data("plain")
    retry = {"max_attempts": 2, "delay": "50ms"}
    run = run_to_end(app, client, op, [
        {"id": "flaky", "type": "http", "retry": retry, "with": {
            "url": httpserver.url_for("/flaky"), "paginate": {"type": "link"}}},
        {"id": "away", "type": "http", "retry": retry, "with": {
            "url": httpserver.url_for("/away"), "paginate": {"type": "link"}}},
        {"id": "text", "type": "http", "retry": retry, "with": {
            "url": httpserver.url_for("/text"), "paginate": {"type": "link"}}},
    ])
    tasks = run["by_task"]
    assert tasks["flaky"]["attempts"] == 2
    assert tasks["flaky"]["error"] == (f"HTTP 503 from {httpserver.url_for('/flaky')}"
                                       "?page=2 (page 2)")
    assert tasks["away"]["attempts"] == 1
    assert tasks["away"]["error"] == ("paginate: the next link https://elsewhere.example/x "
                                      "leaves the first request's origin: not followed")
    assert tasks["text"]["attempts"] == 1
    assert tasks["text"]["error"] == (f"paginate: page 1 ({httpserver.url_for('/text')}) "
                                      "is not JSON")


def test_bad_input_is_a_422_naming_the_field(client: FlaskClient, op: dict[str, Any]) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "half", "type": "http",
        "config": {"base_url": "https://api.example.com", "auth": "oauth2_client_credentials",
                   "client_id": "x"}})
    assert r.status_code == 422
    assert {e["path"] for e in r.get_json()["errors"]} == {"config"}
    assert "needs token_url" in str(r.get_json()["errors"])
    r = client.post("/api/v1/workflows/validate", headers=op["h"], json={"definition": {
        "name": "t", "tasks": [
            {"id": "a", "type": "http", "with": {"url": "orders"}},
            {"id": "b", "type": "http", "with": {"connection": "api", "url": "ftp://x"}},
            {"id": "c", "type": "http", "with": {
                "connection": "api", "url": "orders",
                "paginate": {"type": "link", "cursor": {"path": "next", "param": "c"},
                             "max_pages": 0}}},
        ]}})
    errors = {(e["path"], e["message"]) for e in r.get_json()["errors"]}
    assert errors == {
        ("tasks[0].with.url", "must be an http:// or https:// URL"),
        ("tasks[1].with.url", "must be an http:// or https:// URL, or a path under the "
                              "connection's base_url"),
        ("tasks[2].with.paginate.max_pages", "must be greater than or equal to 1"),
    }


def test_testing_an_oauth2_connection_asks_for_a_token(client: FlaskClient,
                                                       op: dict[str, Any],
                                                       httpserver: HTTPServer) -> None:
    endpoint = TokenEndpoint()
    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(endpoint)
    seen: list[str] = []
    httpserver.expect_request("/api").respond_with_handler(_api(lambda: set(seen), seen))
    for name, secret in (("good", CLIENT_SECRET), ("wrong", "not-the-secret")):
        _connection(client, op, name, _oauth2(httpserver), {"client_secret": secret})
    listed = client.get("/api/v1/connections/", headers=op["h"]).get_json()["result"]
    ids = {c["name"]: c["id"] for c in listed}
    good = client.post(f"/api/v1/connections/{ids['good']}/test", headers=op["h"]).get_json()
    wrong = client.post(f"/api/v1/connections/{ids['wrong']}/test", headers=op["h"]).get_json()
    assert good["ok"] is True, good
    assert seen == [f"AT-1-{ACCESS}"]
    assert wrong["ok"] is False
    assert wrong["message"] == (f"token endpoint {httpserver.url_for('/oauth/token')}"
                                          ": HTTP 401: invalid_client")


def test_a_webhook_through_an_oauth2_connection_renews_a_refused_token(
        app: Flask, client: FlaskClient, op: dict[str, Any], httpserver: HTTPServer) -> None:
    endpoint = TokenEndpoint()
    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(endpoint)
    accepted = {f"AT-1-{ACCESS}"}
    seen: list[str] = []
    httpserver.expect_request("/api/events", method="POST").respond_with_handler(
        _api(lambda: accepted, seen))
    _connection(client, op, "oauth", _oauth2(httpserver), {"client_secret": CLIENT_SECRET})
    task = {"id": "post", "type": "webhook", "with": {"connection": "oauth", "url": "events",
                                                      "json": {"n": 1}}}
    first = run_to_end(app, client, op, [task])
    accepted = {f"AT-2-{ACCESS}"}
    second = run_to_end(app, client, op, [task])
    assert first["status"] == second["status"] == "succeeded", _errors(second)
    assert seen == [f"AT-1-{ACCESS}", f"AT-1-{ACCESS}", f"AT-2-{ACCESS}"]
    assert second["by_task"]["post"]["output"]["json"]["you_sent"] == "Bearer ***"
    assert len(endpoint.requests) == 2
