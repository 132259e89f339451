"""OAuth2 access tokens for ``http`` connections (RFC 6749): the client-credentials
grant (section 4.4) and the refresh-token grant (section 6).

A token is asked of the connection's ``token_url`` (a form POST through the egress
policy, like every call) and kept in this worker process until ``expires_in`` less a
margin, keyed by the connection's id and a hash of what the token depends on (its
secret fields, token URL, client id, scopes): editing the connection, or rotating its
secret, starts afresh. Nothing is written anywhere: each worker process asks for its
own token once, then reuses it.

A refresh-token grant whose reply carries a new ``refresh_token`` (rotation) is
followed with the new one for the rest of the process's life; the connection's stored
refresh token is not rewritten (a task never writes to a connection). A server that
revokes the old refresh token on rotation therefore needs the connection updated after
a worker restart, or refresh-token rotation turned off for this client.

Errors of the token endpoint: 400 and 401 (``invalid_client``, ``invalid_grant``...)
fail the task, not retried, with the endpoint's ``error`` and ``error_description``;
429, 5xx and connection errors are retriable.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from capability.connectors.sdk import ConnectorError, Context

__all__ = ["GRANTS", "forget", "token"]

GRANTS = {"oauth2_client_credentials": "client_credentials",
          "oauth2_refresh_token": "refresh_token"}
MARGIN = 30.0  # seconds before expires_in when a cached token is no longer used
UNSTATED_LIFETIME = 300.0  # a reply without expires_in: reused this long, at most
CACHE_SIZE = 512  # tokens kept per process (the least recently used beyond go)
_RETRIABLE = {429} | set(range(500, 600))


@dataclass
class _Token:
    access_token: str
    good_until: float  # time.monotonic()


_tokens: OrderedDict[str, _Token] = OrderedDict()
_rotated: OrderedDict[str, str] = OrderedDict()  # cache key -> the newest refresh token
_lock = threading.Lock()


def _key(context: Context) -> str | None:
    """The cache key of the context's connection; None without an id (a connection's
    Test button: its token is asked for afresh, as a test should)."""
    connection = context.connection or {}
    if not context.connection_id:
        return None
    depends = {name: connection.get(name) for name in (
        "auth", "token_url", "client_id", "scopes", "client_auth", "client_secret",
        "refresh_token")}
    digest = hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode())
    return f"{context.connection_id}:{digest.hexdigest()}"


def token(context: Context, *, fresh: bool = False) -> str:
    """An access token for the context's connection: the cached one while it is good,
    else (or with ``fresh``) a new one from the token endpoint. Masked in the attempt
    either way: it is a credential, though no stored secret."""
    key = _key(context)
    if key is not None and not fresh:
        with _lock:
            cached = _tokens.get(key)
            if cached is not None and cached.good_until > time.monotonic():
                _tokens.move_to_end(key)
                context.mask(cached.access_token)
                return cached.access_token
    with _lock:
        refresh = _rotated.get(key) if key is not None else None
    access, lifetime, rotated = _ask(context, refresh)
    context.mask(access)
    if key is not None:
        with _lock:
            if lifetime > 0:
                _tokens[key] = _Token(access, time.monotonic() + lifetime
                                      - min(MARGIN, lifetime / 10))
                _tokens.move_to_end(key)
            if rotated:
                _rotated[key] = rotated
                _rotated.move_to_end(key)
            for kept in (_tokens, _rotated):
                while len(kept) > CACHE_SIZE:
                    kept.popitem(last=False)
    return access


def forget(context: Context) -> None:
    """Drop the cached token of the context's connection (the API refused it)."""
    key = _key(context)
    if key is not None:
        with _lock:
            _tokens.pop(key, None)


def _ask(context: Context, refresh: str | None) -> tuple[str, float, str | None]:
    """A token from the endpoint: (access token, seconds it is good for, the new
    refresh token if the reply rotated it)."""
    import requests

    connection = context.connection or {}
    auth = str(connection.get("auth") or "")
    grant = GRANTS[auth]
    url = str(connection.get("token_url") or "")
    client_id = str(connection.get("client_id") or "")
    secret = str(connection.get("client_secret") or "")
    if not url:
        raise ConnectorError(f"connection auth {auth} needs token_url")
    form: dict[str, str] = {"grant_type": grant}
    if grant == "client_credentials" and not (client_id and secret):
        raise ConnectorError(f"connection auth {auth} needs client_id and the secret "
                             "client_secret")
    if grant == "refresh_token":
        form["refresh_token"] = refresh or str(connection.get("refresh_token") or "")
        if not form["refresh_token"]:
            raise ConnectorError(f"connection auth {auth} needs the secret refresh_token")
    scopes = connection.get("scopes") or []
    if scopes:
        form["scope"] = " ".join(str(scope) for scope in scopes)
    basic = None
    if secret and connection.get("client_auth", "basic") == "basic":
        # RFC 6749 2.3.1: each form-encoded, then HTTP Basic.
        basic = (quote_plus(client_id), quote_plus(secret))
    else:
        if client_id:
            form["client_id"] = client_id
        if secret:
            form["client_secret"] = secret
    try:
        response = context.http("POST", url, data=form, auth=basic,
                                 headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise ConnectorError(f"token endpoint {url}: {type(exc).__name__}: {exc}",
                             retriable=True) from None
    try:
        reply: Any = response.json()
    except ValueError:
        reply = None
    if response.status_code >= 400:
        raise ConnectorError(f"token endpoint {url}: HTTP {response.status_code}: "
                             f"{_error_of(reply, response.text)}",
                             retriable=response.status_code in _RETRIABLE)
    if not isinstance(reply, dict) or not isinstance(reply.get("access_token"), str) \
            or not reply["access_token"]:
        raise ConnectorError(f"token endpoint {url}: the reply has no access_token")
    kind = str(reply.get("token_type") or "bearer")
    if kind.lower() != "bearer":
        raise ConnectorError(f"token endpoint {url}: token_type {kind!r} is not supported "
                             "(bearer only)")
    rotated = reply.get("refresh_token")
    if not (isinstance(rotated, str) and rotated):
        rotated = None
    else:
        context.mask(rotated)
    return reply["access_token"], _lifetime(reply.get("expires_in")), rotated


def _lifetime(expires_in: Any) -> float:
    # Some servers send "3600" as text; a reply without it is reused a short while.
    if expires_in is None or isinstance(expires_in, bool):
        return UNSTATED_LIFETIME
    try:
        return max(0.0, float(expires_in))
    except (TypeError, ValueError):
        return UNSTATED_LIFETIME


def _error_of(reply: Any, text: str) -> str:
    """The endpoint's own words (RFC 6749 5.2: ``error``, ``error_description``)."""
    if isinstance(reply, dict) and reply.get("error"):
        words = str(reply["error"])
        if reply.get("error_description"):
            words += f": {reply['error_description']}"
        return words
    return text[:300] or "no reply"
