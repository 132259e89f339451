"""The pieces of the extended ``http`` task that need no peer: where a path goes under a
base URL, how headers override, the RFC 8288 Link header, cursors and items of a page,
and the OAuth2 token cache (its key, lifetime and margin)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from capability.connectors import http_task, oauth
from capability.connectors.sdk import ConnectorError, Context

BASE = "https://api.example.com/v1"


@pytest.mark.parametrize(("url", "joined"), [
    ("orders", f"{BASE}/orders"),
    ("/orders", f"{BASE}/orders"),
    ("orders/7?x=1", f"{BASE}/orders/7?x=1"),
    ("", BASE),
    ("/", BASE),
    ("?page=2", f"{BASE}?page=2"),
    ("https://API.example.com:443/v2/x", "https://API.example.com:443/v2/x"),
])
def test_a_path_joins_under_the_base_url(url: str, joined: str) -> None:
    assert http_task._joined(BASE, url) == joined
    if url.strip("/?").isalnum():  # a base URL with a trailing "/" joins the same
        assert http_task._joined(BASE + "/", url) == joined


@pytest.mark.parametrize("url", ["https://other.example.com/v1/x",
                                 "http://api.example.com/v1/x",
                                 "https://api.example.com:8443/v1/x"])
def test_an_absolute_url_elsewhere_is_refused(url: str) -> None:
    with pytest.raises(ConnectorError, match="is not on the connection's base_url origin"):
        http_task._joined(BASE, url)


def test_headers_override_by_name_in_any_case() -> None:
    assert http_task._merged({"Accept": "text/plain", "X-Team": "a"},
                             {"authorization": "Bearer t"},
                             {"ACCEPT": "application/json"}) == {
        "X-Team": "a", "authorization": "Bearer t", "ACCEPT": "application/json"}


@pytest.mark.parametrize(("header", "following"), [
    ('<https://api.example.com/v1/x?page=2>; rel="next"', "https://api.example.com/v1/x?page=2"),
    ('<?page=3>; rel="next"', "https://api.example.com/v1/items?page=3"),
    ('</v1/x?page=1>; rel="first", <x?page=4>; rel="next", <x?page=9>; rel="last"',
     "https://api.example.com/v1/x?page=4"),
    ("<x?page=5>; rel=next", "https://api.example.com/v1/x?page=5"),
    ('<x?page=6>; rel="next last"', "https://api.example.com/v1/x?page=6"),
    ('<x?page=1>; rel="prev"', None),
    ("", None),
])
def test_the_next_link_of_a_link_header(header: str, following: str | None) -> None:
    headers = {"link": header} if header else {}
    assert http_task._next_link(headers, "https://api.example.com/v1/items") == following


@pytest.mark.parametrize(("path", "body", "cursor"), [
    ("meta.next", {"meta": {"next": "abc"}}, "abc"),
    ("meta.next", {"meta": {"next": 42}}, "42"),
    ("meta.next", {"meta": {"next": None}}, None),
    ("meta.next", {"meta": {"next": ""}}, None),
    ("meta.next", {"meta": {}}, None),
    ("meta.next", {}, None),
    ("pages.1.token", {"pages": [{"token": "a"}, {"token": "b"}]}, "b"),
    ("pages.5.token", {"pages": [{"token": "a"}]}, None),
    ("$.links[?(@.rel == 'next')].cursor",
     {"links": [{"rel": "self", "cursor": "s"}, {"rel": "next", "cursor": "n"}]}, "n"),
    ("$.next", {"next": None}, None),
    ("$.next", [], None),
])
def test_the_cursor_of_a_page(path: str, body: Any, cursor: str | None) -> None:
    assert http_task._cursor(body, path) == cursor


def test_a_cursor_that_is_an_object_fails() -> None:
    with pytest.raises(ConnectorError, match="is an object or a list in the page"):
        http_task._cursor({"next": {"id": 1}}, "next")


@pytest.mark.parametrize(("body", "path", "items"), [
    ([1, 2], None, [1, 2]),
    ({"data": [1]}, None, [{"data": [1]}]),
    ({"data": [1, 2]}, "$.data", [1, 2]),
    ({"data": [1, 2]}, "$.data[*]", [1, 2]),
    ({"data": [{"id": 1}, {"id": 2}]}, "$.data[*].id", [1, 2]),
    ({"data": []}, "$.data", []),
    ({"other": 1}, "$.data", []),
])
def test_the_items_of_a_page(body: Any, path: str | None, items: list[Any]) -> None:
    assert http_task._items({"json": body}, path, 1, "u") == items


class _Reply:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self.body, self.text = status, body, str(body)

    def json(self) -> Any:
        return self.body


def _context(replies: list[_Reply], sent: list[dict[str, Any]], masks: list[str],
             connection_id: str | None = "conn-1", **config: Any) -> Context:
    connection = {"auth": "oauth2_client_credentials", "token_url": "https://id.example/t",
                  "client_id": "app", "client_secret": "shh", **config}

    def http(method: str, url: str, **fields: Any) -> _Reply:
        sent.append({"method": method, "url": url, **fields})
        return replies.pop(0)

    return Context(with_=None, attempt_id="a", deadline=time.monotonic() + 10,
                   connection=connection, http=http, connection_id=connection_id,
                   mask=masks.append)


def test_a_token_is_cached_until_its_lifetime_less_a_margin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(oauth.time, "monotonic", lambda: now[0])
    sent: list[dict[str, Any]] = []
    masks: list[str] = []
    replies = [_Reply(200, {"access_token": f"t{n}", "expires_in": 100}) for n in (1, 2)]
    context = _context(replies, sent, masks, client_id="a b", client_secret="s&t")
    assert oauth.token(context) == "t1"
    # RFC 6749 2.3.1: the client's id and secret form-encoded, then HTTP Basic.
    assert sent[0]["auth"] == ("a+b", "s%26t")
    assert sent[0]["data"] == {"grant_type": "client_credentials"}
    now[0] += 89  # 100 s less a 10 s margin (a tenth of the lifetime, at most 30 s)
    assert oauth.token(context) == "t1" and len(sent) == 1
    now[0] += 2
    assert oauth.token(context) == "t2" and len(sent) == 2
    assert masks == ["t1", "t1", "t2"]  # each use masks it in its attempt


def test_the_cache_key_changes_with_the_secret_and_test_never_caches() -> None:
    masks: list[str] = []
    sent: list[dict[str, Any]] = []
    replies = [_Reply(200, {"access_token": f"k{n}", "expires_in": 3600}) for n in range(4)]
    first = _context(replies, sent, masks, connection_id="conn-key")
    assert oauth.token(first) == "k0" and oauth.token(first) == "k0"
    rotated = _context(replies, sent, masks, connection_id="conn-key", client_secret="new")
    assert oauth.token(rotated) == "k1"
    untested = _context(replies, sent, masks, connection_id=None)
    assert oauth.token(untested) == "k2" and oauth.token(untested) == "k3"


@pytest.mark.parametrize(("reply", "message", "retriable"), [
    (_Reply(400, {"error": "invalid_grant", "error_description": "expired"}),
     "HTTP 400: invalid_grant: expired", False),
    (_Reply(401, "denied"), "HTTP 401: denied", False),
    (_Reply(429, {}), "HTTP 429: {}", True),
    (_Reply(502, "bad gateway"), "HTTP 502: bad gateway", True),
    (_Reply(200, {"token_type": "bearer"}), "the reply has no access_token", False),
    (_Reply(200, {"access_token": "x", "token_type": "mac"}),
     "token_type 'mac' is not supported (bearer only)", False),
])
def test_token_endpoint_errors(reply: _Reply, message: str, retriable: bool) -> None:
    context = _context([reply], [], [], connection_id=None)
    with pytest.raises(ConnectorError) as caught:
        oauth.token(context)
    assert caught.value.message == f"token endpoint https://id.example/t: {message}"
    assert caught.value.retriable is retriable


@pytest.mark.parametrize(("expires_in", "lifetime"), [
    (3600, 3600.0), ("120", 120.0), (None, oauth.UNSTATED_LIFETIME),
    ("soon", oauth.UNSTATED_LIFETIME), (True, oauth.UNSTATED_LIFETIME), (-5, 0.0)])
def test_lifetime_of_a_reply(expires_in: Any, lifetime: float) -> None:
    assert oauth._lifetime(expires_in) == lifetime
