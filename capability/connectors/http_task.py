"""The ``http`` task through a connection, and over pages (CONNECTORS.md, "http
(extended)"). Each request is the engine's own (``engine.executors.http``: the egress
policy at every hop, the same output, statuses and retries); this module decides what
is sent and how many times.

With ``with.connection`` (an ``http`` connection of the run's team):

- ``url`` may be a path: it is joined under the connection's ``base_url`` (``orders``
  and ``/orders`` both give ``<base_url>/orders``: a leading ``/`` does not leave the
  base path, as with the ``webhook`` task). An absolute URL must be on the base URL's
  origin (scheme, host and port): the connection's credentials go nowhere else.
- headers: the connection's ``headers``, then its authentication, then
  ``with.headers``, each overriding the one before by name (any letter case).
  ``with.auth`` replaces the connection's authentication altogether.
- OAuth2 (``oauth``): the cached access token is sent; a 401 drops it, and the request
  is sent once more with a new one.

With ``with.paginate``, the pages are requested one after the other, each checked like
a single request (a failing page fails the task, its number in the error; a page after
the first has an ``Idempotency-Key`` of its own, ``<attempt id>.<page>``), and the
output is ``{pages, items}``: ``items`` gathers each page's items, read with
``items_path`` (a JSONPath; one match that is a list gives its elements, so ``$.data``
and ``$.data[*]`` are the same), else the page's JSON itself: the elements of a list,
or an object as one item. A page that is not JSON fails the task. Pagination stops
when there is no next page, after ``max_pages`` (100 by default), or fails, not
retried, when the items grow over ``TASK_OUTPUT_MAX_BYTES``:

- ``type: link``: the ``Link`` header's ``rel="next"`` (RFC 8288), a relative link
  resolved against the page's URL, on the first request's origin only; the next
  request is the link as it is (its own query string; ``with.params`` not added).
- ``cursor: {path, param}``: the cursor at ``path`` of the page's JSON (a JSONPath, or
  a dotted path such as ``meta.next_cursor``) is sent as the query parameter
  ``param`` with the task's own ``params``; a missing, null or empty cursor ends it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

from pydantic import ValidationError

from capability.connectors import oauth
from capability.connectors.sdk import ConnectorError, Context
from capability.connectors.web import credentials, uses_oauth
from capability.dsl.builtin_types import HttpPaginate, HttpWith
from capability.dsl.fields import RENDERED
from capability.egress import EgressRefused
from capability.engine import outputs
from capability.engine.executors import http as one_request
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext, Outcome

__all__ = ["CONNECTION_TYPES", "execute"]

CONNECTION_TYPES = ("http",)
_ABSOLUTE = re.compile(r"^https?://", re.IGNORECASE)


def execute(params: dict[str, Any], ctx: AttemptContext, settings: EngineSettings,
            context: Context) -> Outcome:
    """The task, its ``with`` rendered (``params``) and ``context.connection`` resolved
    (or None: a paginated request without a connection)."""
    try:
        with_ = HttpWith.model_validate(params, context={RENDERED: True})
    except ValidationError as exc:
        return Outcome.failure(f"with: {exc}", retriable=False)
    try:
        sender = _Sender(params, ctx, settings, context)
        if with_.paginate is None:
            return sender.send(sender.url, sender.query)
        return _paginated(sender, with_.paginate, settings, context)
    except ConnectorError as exc:
        return Outcome.failure(exc.message, retriable=exc.retriable)
    except EgressRefused as exc:  # the token endpoint's (the requests' are classed there)
        return Outcome.failure(str(exc), retriable=False)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (
        443 if scheme == "https" else 80)


def _joined(base: str, url: str) -> str:
    if _ABSOLUTE.match(url):
        if _origin(url) != _origin(base):
            raise ConnectorError(f"with.url: {url} is not on the connection's base_url "
                                 f"origin ({base}): its credentials go only there")
        return url
    if not url.strip("/"):
        return base
    if url.startswith("?"):
        return base + url
    return base.rstrip("/") + "/" + url.lstrip("/")


def _merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Headers, each layer overriding the ones before by name, in any letter case."""
    out: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            for same in [old for old in out if old.lower() == name.lower()]:
                del out[same]
            out[name] = value
    return out


class _Sender:
    """One request of the task, as many times as pages and token renewals need."""

    def __init__(self, params: dict[str, Any], ctx: AttemptContext, settings: EngineSettings,
                 context: Context) -> None:
        self.params, self.ctx, self.settings, self.context = params, ctx, settings, context
        self.url = str(params["url"])
        self.query: dict[str, Any] = dict(params.get("params") or {})
        self.auth: dict[str, Any] | None = params.get("auth") or None
        self.oauth = False
        headers = dict(params.get("headers") or {})
        connection = context.connection
        if connection is not None:
            self.url = _joined(str(connection["base_url"]), self.url)
            given = {name.lower() for name in headers}
            layers: list[dict[str, Any]] = [dict(connection.get("headers") or {})]
            if self.auth is None:  # with.auth replaces the connection's
                if uses_oauth(context):
                    self.oauth = "authorization" not in given
                else:
                    added, basic = credentials(context)
                    layers.append(added)
                    if basic is not None and "authorization" not in given:
                        self.auth = {"type": "basic", "username": basic[0],
                                     "password": basic[1]}
            headers = _merged(*layers, headers)
        self.headers = headers

    def send(self, url: str, query: dict[str, Any], page: int = 1) -> Outcome:
        request = {**self.params, "url": url, "params": query, "auth": self.auth,
                   "headers": self._headers(page, fresh=False)}
        outcome = one_request(request, self.ctx, self.settings)
        if self.oauth and _status(outcome) == 401:
            # The cached token was revoked or expired early: a new one, and once more.
            oauth.forget(self.context)
            self.context.log("info", f"HTTP 401 from {url}: a new access token, and the "
                                     "request once more")
            request["headers"] = self._headers(page, fresh=True)
            outcome = one_request(request, self.ctx, self.settings)
        return outcome

    def _headers(self, page: int, *, fresh: bool) -> dict[str, Any]:
        headers = self.headers
        if page > 1 and not any(name.lower() == "idempotency-key" for name in headers):
            # Each page is a request of its own: a receiver that keeps the attempt's key
            # (the first page's) must not answer the next page with the first one.
            headers = {**headers, "Idempotency-Key": f"{self.ctx.attempt_id}.{page}"}
        if not self.oauth:
            return headers
        # Over the connection's headers; with.headers has no Authorization here (or the
        # token would not be asked for).
        bearer = {"Authorization": f"Bearer {oauth.token(self.context, fresh=fresh)}"}
        return _merged(headers, bearer)


def _status(outcome: Outcome) -> int | None:
    output = outcome.output
    return output.get("status") if isinstance(output, dict) else None


def _paginated(sender: _Sender, spec: HttpPaginate, settings: EngineSettings,
               context: Context) -> Outcome:
    url, query = sender.url, dict(sender.query)
    origin = _origin(url)
    items: list[Any] = []
    size = pages = 0
    while True:
        pages += 1
        outcome = sender.send(url, query, pages)
        if not outcome.ok:
            if pages > 1 and outcome.error:
                outcome.error = f"{outcome.error} (page {pages})"
            return outcome
        page: dict[str, Any] = outcome.output
        found = _items(page, spec.items_path, pages, url)
        size += outputs.size_of(found)
        if 0 < settings.output_max_bytes < size:
            raise ConnectorError(
                f"paginate: the items of {pages} pages are over TASK_OUTPUT_MAX_BYTES "
                f"({settings.output_max_bytes} bytes): lower max_pages, or take less of "
                "each page with items_path")
        items.extend(found)
        context.log("info", f"page {pages}: {len(found)} items from {url}")
        if pages >= spec.max_pages:
            break
        if spec.cursor is None:
            following = _next_link(page.get("headers") or {}, url)
            if following is None:
                break
            if _origin(following) != origin:
                raise ConnectorError(f"paginate: the next link {following} leaves the "
                                     "first request's origin: not followed")
            url, query = following, {}
        else:
            cursor = _cursor(page.get("json"), spec.cursor.path)
            if cursor is None:
                break
            query = {**query, spec.cursor.param: cursor}
    return Outcome.success({"pages": pages, "items": items})


def _items(page: dict[str, Any], path: str | None, number: int, url: str) -> list[Any]:
    body = page.get("json")
    if body is None:
        raise ConnectorError(f"paginate: page {number} ({url}) is not JSON")
    if path is None:
        return list(body) if isinstance(body, list) else [body]
    from jsonpath_ng.ext import parse

    matches = [match.value for match in parse(path).find(body)]
    if len(matches) == 1 and isinstance(matches[0], list):
        return list(matches[0])
    return matches


def _next_link(headers: dict[str, Any], url: str) -> str | None:
    """The ``rel="next"`` target of the ``Link`` header (RFC 8288), resolved against
    the page's URL; None when there is none."""
    import requests

    value = next((str(v) for k, v in headers.items() if k.lower() == "link"), "")
    for link in requests.utils.parse_header_links(value):
        if "next" in str(link.get("rel", "")).lower().split() and link.get("url"):
            return urljoin(url, str(link["url"]))
    return None


def _cursor(body: Any, path: str) -> str | None:
    """The next cursor in a page's JSON: text (a number is sent as text), or None."""
    if path.startswith("$"):
        from jsonpath_ng.ext import parse

        matches = [match.value for match in parse(path).find(body)]
        value = matches[0] if matches else None
    else:
        value = body
        for part in path.split("."):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = None
                break
    if value is None or value == "" or value is False:
        return None
    if isinstance(value, dict | list):
        raise ConnectorError(f"paginate.cursor.path: {path} is an object or a list in the "
                             "page, not a cursor")
    return str(value)
