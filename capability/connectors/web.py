"""Connectors that post over HTTP (CONNECTORS.md): ``webhook`` (with Standard Webhooks or
HMAC-SHA256 signing), ``slack`` and ``teams``; and the ``http``, ``slack`` and ``teams``
connection types. Every call goes through ``context.http``: the egress policy checks
each hop, the deadline bounds it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from capability.connectors import oauth
from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)

RETRIABLE_STATUS = {429} | set(range(500, 600))


def _http_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("an http:// or https:// URL")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


HttpAuth = Literal["none", "basic", "bearer", "api_key", "oauth2_client_credentials",
                   "oauth2_refresh_token"]


class HttpConfig(_Model):
    base_url: str = Field(min_length=1, max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth = "none"
    username: str | None = Field(default=None, max_length=256, description="basic")
    api_key_header: str = Field(default="X-API-Key", max_length=128, description="api_key")
    token_url: str | None = Field(default=None, max_length=2048, description=(
        "oauth2: the token endpoint"))
    client_id: str | None = Field(default=None, max_length=512, description="oauth2")
    scopes: list[str] = Field(default_factory=list, description=(
        "oauth2: the scopes asked for (sent space-separated)"))
    client_auth: Literal["basic", "body"] = Field(default="basic", description=(
        "oauth2: client_id and client_secret as HTTP Basic (RFC 6749 2.3.1) or in the "
        "form body"))

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _oauth2(self) -> HttpConfig:
        if self.auth.startswith("oauth2_") and not self.token_url:
            raise ValueError(f"auth {self.auth} needs token_url")
        if self.auth == "oauth2_client_credentials" and not self.client_id:
            raise ValueError("auth oauth2_client_credentials needs client_id")
        return self


class HttpSecret(_Model):
    password: str = Field(default="", max_length=4096, description="basic")
    token: str = Field(default="", max_length=8192, description="bearer")
    api_key: str = Field(default="", max_length=4096, description="api_key")
    client_secret: str = Field(default="", max_length=4096, description=(
        "oauth2 (required by client credentials)"))
    refresh_token: str = Field(default="", max_length=8192, description=(
        "oauth2_refresh_token"))


class SlackConfig(_Model):
    channel: str | None = Field(default=None, max_length=128, description=(
        "a channel id or #name, for a bot token"))
    api_url: str = Field(default="https://slack.com/api", max_length=2048)

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class SlackSecret(_Model):
    webhook_url: str = Field(default="", max_length=2048, description="an incoming webhook")
    token: str = Field(default="", max_length=4096, description="a bot token (xoxb-...)")

    @model_validator(mode="after")
    def _one(self) -> SlackSecret:
        if bool(self.webhook_url) == bool(self.token):
            raise ValueError("give webhook_url or token (one of them)")
        if self.webhook_url:
            _http_url(self.webhook_url)
        return self


class TeamsConfig(_Model):
    pass


class TeamsSecret(_Model):
    webhook_url: str = Field(min_length=1, max_length=2048)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


def _retriable(exc: Exception) -> bool:
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _check(response: Any, what: str) -> None:
    if response.status_code >= 400:
        raise ConnectorError(f"{what}: HTTP {response.status_code}: {response.text[:500]}",
                             retriable=response.status_code in RETRIABLE_STATUS)


def credentials(context: Context, *, fresh: bool = False) -> tuple[dict[str, str], Any]:
    """An http connection's authentication: (headers to add, HTTP Basic credentials or
    None). OAuth2: a bearer token, the cached one unless ``fresh`` (``oauth``)."""
    connection = context.connection or {}
    auth = connection.get("auth") or "none"
    if auth == "basic":
        return {}, (str(connection.get("username") or ""),
                    str(connection.get("password") or ""))
    if auth == "bearer":
        return {"Authorization": f"Bearer {connection.get('token', '')}"}, None
    if auth == "api_key":
        return {str(connection.get("api_key_header") or "X-API-Key"): str(
            connection.get("api_key") or "")}, None
    if auth in oauth.GRANTS:
        return {"Authorization": f"Bearer {oauth.token(context, fresh=fresh)}"}, None
    return {}, None


def uses_oauth(context: Context) -> bool:
    return (context.connection or {}).get("auth") in oauth.GRANTS


def _auth_headers(context: Context, *, fresh: bool = False) -> tuple[dict[str, str], Any]:
    """The connection's headers with its authentication added."""
    assert context.connection is not None
    added, basic = credentials(context, fresh=fresh)
    return {**dict(context.connection.get("headers") or {}), **added}, basic


class HttpType(ConnectionType):
    type = "http"
    Config = HttpConfig
    Secret = HttpSecret
    description = ("An HTTP API: its base URL, default headers and authentication (basic, "
                   "bearer, an API key header, OAuth2 client credentials or refresh token).")

    def test(self, context: Context) -> str:
        assert context.connection is not None
        # OAuth2: a token is asked for (Test has no connection id: never a cached one).
        headers, basic = _auth_headers(context)
        response = context.http("GET", str(context.connection["base_url"]), headers=headers,
                                auth=basic)
        _check(response, "GET base_url")
        return f"HTTP {response.status_code} from {context.connection['base_url']}"


class SlackType(ConnectionType):
    type = "slack"
    Config = SlackConfig
    Secret = SlackSecret
    description = "Slack: an incoming-webhook URL, or a bot token and a channel."

    def test(self, context: Context) -> str:
        assert context.connection is not None
        if context.connection.get("token"):
            reply = _slack_api(context, "auth.test", {})
            return f"connected as {reply.get('user')} to {reply.get('team')}"
        return "an incoming webhook: it is called when a task posts (nothing to test)"


class TeamsType(ConnectionType):
    type = "teams"
    Config = TeamsConfig
    Secret = TeamsSecret
    description = "Microsoft Teams: an incoming-webhook (workflow) URL."

    def test(self, context: Context) -> str:
        return "an incoming webhook: it is called when a task posts (nothing to test)"


def _slack_api(context: Context, method: str, body: dict[str, Any]) -> dict[str, Any]:
    assert context.connection is not None
    base = str(context.connection.get("api_url") or "https://slack.com/api").rstrip("/")
    response = context.http("POST", f"{base}/{method}", json=body, headers={
        "Authorization": f"Bearer {context.connection['token']}"})
    _check(response, f"slack {method}")
    reply = response.json()
    if not reply.get("ok"):
        error = reply.get("error") or "not ok"
        raise ConnectorError(f"slack {method}: {error}", retriable=error == "ratelimited")
    return dict(reply)


# -- webhook --------------------------------------------------------------------------

class Signing(_Model):
    scheme: Literal["standard-webhooks", "hmac-sha256"] = Field(description=(
        "standard-webhooks (webhook-id, -timestamp, -signature headers) or hmac-sha256 "
        "(the hex HMAC of the body in header)"))
    secret: str = Field(min_length=1, max_length=4096, description=(
        "usually {{ secrets.<name> }}; standard-webhooks: whsec_<base64>"))
    header: str = Field(default="X-Signature", max_length=128, description=(
        "hmac-sha256: the header that carries it"))


class WebhookWith(With):
    """Posts JSON to a URL (or a connection's base URL), optionally signed (Standard
    Webhooks, or an HMAC-SHA256 header). Output: {status, json?}."""

    connection: str | None = Field(default=None, max_length=63, description=(
        "an http connection of the run's team (optional)"))
    url: str | None = Field(default=None, max_length=2048, description=(
        "the URL; with connection, a path under its base URL"))
    json_: Any = Field(default=None, alias="json", description="the body, sent as JSON")
    headers: Templated[dict[str, str]] = Field(default_factory=dict, description=(
        "more headers"))
    signing: Signing | None = Field(default=None, description="sign the body")

    @model_validator(mode="after")
    def _where(self) -> WebhookWith:
        if not self.connection and not self.url:
            raise ValueError("give url, or connection (an http connection)")
        return self


def sign(signing: Signing, body: bytes, message_id: str) -> dict[str, str]:
    """The headers of a signed delivery (what ``triggers.signatures`` verifies)."""
    if signing.scheme == "hmac-sha256":
        return {signing.header: hmac.new(signing.secret.encode(), body,
                                         hashlib.sha256).hexdigest()}
    try:
        key = base64.b64decode(signing.secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ConnectorError("with.signing.secret: a Standard Webhooks secret is "
                             "whsec_ and base64") from None
    ts = str(int(time.time()))
    digest = hmac.new(key, f"{message_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": message_id, "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


class WebhookConnector(Connector):
    type = "webhook"
    With = WebhookWith
    connection_types = ("http",)
    example = {"url": "https://hooks.example.com/orders", "json": {"id": "{{ run.id }}"},
               "signing": {"scheme": "standard-webhooks", "secret": "{{ secrets.hook }}"}}

    def retriable(self, exc: Exception) -> bool:
        return _retriable(exc)

    def execute(self, context: Context) -> Any:
        with_: WebhookWith = context.with_
        headers: dict[str, str] = {"Content-Type": "application/json"}
        basic = None
        url = with_.url or ""
        if context.connection is not None:
            auth_headers, basic = _auth_headers(context)
            headers.update(auth_headers)
            base = str(context.connection["base_url"])
            url = base if not url else base.rstrip("/") + "/" + url.lstrip("/")
        headers.update(with_.headers)
        body = json.dumps(with_.json_, separators=(",", ":")).encode()
        # The attempt's id: a receiver drops a repeat of the same attempt.
        headers.setdefault("Idempotency-Key", context.attempt_id)
        if with_.signing is not None:
            headers.update(sign(with_.signing, body, f"msg_{context.attempt_id}"))
        response = context.http("POST", url, data=body, headers=headers, auth=basic)
        if response.status_code == 401 and uses_oauth(context) and not any(
                name.lower() == "authorization" for name in with_.headers):
            # A cached token the server no longer takes: once more with a new one (a 401
            # means the delivery was not taken).
            oauth.forget(context)
            fresh, _ = credentials(context, fresh=True)
            response = context.http("POST", url, data=body, auth=basic,
                                    headers={**headers, **fresh})
        _check(response, f"POST {url}")
        try:
            reply = response.json()
        except ValueError:
            reply = None
        return {"status": response.status_code, "json": reply}


# -- slack, teams ---------------------------------------------------------------------

class SlackWith(With):
    """Posts a message to Slack through a slack connection (an incoming webhook, or a bot
    token and channel). Output: {ok, ts?}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "a slack connection of the run's team"))
    text: str = Field(min_length=1, max_length=40_000, description=(
        "the message (Slack's mrkdwn)"))
    blocks: Templated[list[dict[str, Any]] | None] = Field(default=None, description=(
        "Block Kit blocks"))
    channel: str | None = Field(default=None, max_length=128, description=(
        "overrides the connection's channel (bot token)"))


class SlackConnector(Connector):
    type = "slack"
    With = SlackWith
    connection_types = ("slack",)
    example = {"connection": "alerts", "text": "Run {{ run.id }} finished"}

    def retriable(self, exc: Exception) -> bool:
        return _retriable(exc)

    def execute(self, context: Context) -> Any:
        with_: SlackWith = context.with_
        assert context.connection is not None
        body: dict[str, Any] = {"text": with_.text}
        if with_.blocks is not None:
            body["blocks"] = with_.blocks
        if context.connection.get("token"):
            channel = with_.channel or context.connection.get("channel")
            if not channel:
                raise ConnectorError("with.channel: a bot token needs a channel (on the "
                                     "task or the connection)")
            reply = _slack_api(context, "chat.postMessage", {**body, "channel": channel})
            return {"ok": True, "ts": reply.get("ts")}
        response = context.http("POST", str(context.connection["webhook_url"]), json=body)
        _check(response, "slack webhook")
        return {"ok": True}


class TeamsWith(With):
    """Posts a message to Microsoft Teams through a teams connection: text, or an
    Adaptive Card. Output: {ok}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "a teams connection of the run's team"))
    text: str | None = Field(default=None, max_length=28_000, description=(
        "the message; give text or card, not both"))
    card: Templated[dict[str, Any] | None] = Field(default=None, description=(
        "an Adaptive Card (its JSON)"))

    @model_validator(mode="after")
    def _one(self) -> TeamsWith:
        if (self.text is None) == (self.card is None):
            raise ValueError("give text or card (one of them)")
        return self


class TeamsConnector(Connector):
    type = "teams"
    With = TeamsWith
    connection_types = ("teams",)
    example = {"connection": "ops-channel", "text": "Nightly load done: {{ run.id }}"}

    def retriable(self, exc: Exception) -> bool:
        return _retriable(exc)

    def execute(self, context: Context) -> Any:
        with_: TeamsWith = context.with_
        assert context.connection is not None
        if with_.card is not None:
            body: dict[str, Any] = {"type": "message", "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": with_.card}]}
        else:
            body = {"text": with_.text}
        response = context.http("POST", str(context.connection["webhook_url"]), json=body)
        _check(response, "teams webhook")
        return {"ok": True}
