"""``llm`` (CONNECTORS.md): a chat completion from an OpenAI-compatible endpoint through
an ``openai`` connection. With ``response_schema`` the reply must be JSON that
validates: otherwise the attempt fails, retriable, with every reason (a model asked
again often answers right). Token usage is recorded, and priced with ``LLM_PRICES``."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from capability.connectors.data import violations
from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)

RETRIABLE_STATUS = {408, 409, 429} | set(range(500, 600))


class OpenAiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(default="https://api.openai.com/v1", max_length=2048)
    model: str | None = Field(default=None, max_length=128, description="the default model")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL")
        return value


class OpenAiSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=4096)


def _call(context: Context, path: str, body: dict[str, Any] | None = None) -> Any:
    assert context.connection is not None
    url = str(context.connection["base_url"]).rstrip("/") + path
    headers = {"Authorization": f"Bearer {context.connection['api_key']}"}
    response = (context.http("POST", url, json=body, headers=headers) if body is not None
                else context.http("GET", url, headers=headers))
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", {}).get("message") or response.text[:300]
        except (ValueError, AttributeError):
            detail = response.text[:300]
        raise ConnectorError(f"llm: HTTP {response.status_code}: {detail}",
                             retriable=response.status_code in RETRIABLE_STATUS)
    try:
        return response.json()
    except ValueError:
        raise ConnectorError("llm: the endpoint did not answer JSON", retriable=True) from None


class OpenAiType(ConnectionType):
    type = "openai"
    Config = OpenAiConfig
    Secret = OpenAiSecret
    description = "An OpenAI-compatible API: base URL, default model, API key."

    def test(self, context: Context) -> str:
        found = _call(context, "/models")
        names = [m.get("id") for m in found.get("data", [])][:5]
        return f"connected: {len(found.get('data', []))} model(s) ({', '.join(map(str, names))})"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="who says it")
    content: str = Field(description="what is said")


class LlmWith(With):
    """Asks an OpenAI-compatible chat model through an openai connection: messages, or
    prompt with an optional system. With response_schema the reply is parsed as JSON and
    validated (invalid: the attempt fails, retriable, with the reasons). Output: {text,
    json?, model, usage: {prompt_tokens, completion_tokens, total_tokens}, cost?}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "an openai connection of the run's team"))
    model: str | None = Field(default=None, max_length=128, description=(
        "the model; default the connection's"))
    messages: Templated[list[Message] | None] = Field(default=None, description=(
        "the conversation; give messages, or prompt"))
    prompt: str | None = Field(default=None, description="the user's message")
    system: str | None = Field(default=None, description="a system message, with prompt")
    temperature: Templated[float | None] = Field(default=None, ge=0, le=2, description=(
        "sampling temperature"))
    max_tokens: Templated[int | None] = Field(default=None, ge=1, le=200_000, description=(
        "the longest reply"))
    response_schema: Templated[dict[str, Any] | None] = Field(default=None, description=(
        "a JSON Schema the reply must match (its JSON is then the output's json)"))

    @model_validator(mode="after")
    def _one(self) -> LlmWith:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give messages, or prompt (with an optional system)")
        if self.messages is not None and self.system is not None:
            raise ValueError("system goes with prompt; in messages, add a system message")
        return self


def _cost(prices: Any, model: str, usage: dict[str, Any]) -> float | None:
    price = prices.get(model) if hasattr(prices, "get") else None
    if not isinstance(price, dict):
        return None
    total = (float(usage.get("prompt_tokens") or 0) * float(price.get("prompt") or 0)
             + float(usage.get("completion_tokens") or 0) * float(price.get("completion") or 0))
    return round(total / 1000, 8)


class LlmConnector(Connector):
    type = "llm"
    With = LlmWith
    connection_types = ("openai",)
    example = {"connection": "models", "system": "You classify support tickets.",
               "prompt": "{{ params.ticket }}",
               "response_schema": {"type": "object", "required": ["category"],
                                   "properties": {"category": {"enum": ["bug", "question"]}}}}

    def retriable(self, exc: Exception) -> bool:
        import requests

        return isinstance(exc, requests.ConnectionError | requests.Timeout)

    def execute(self, context: Context) -> Any:
        with_: LlmWith = context.with_
        assert context.connection is not None
        model = with_.model or context.connection.get("model")
        if not model:
            raise ConnectorError("with.model: no model (none on the task or the connection)")
        if with_.messages is not None:
            messages = [m.model_dump() for m in with_.messages]
        else:
            messages = ([{"role": "system", "content": with_.system}] if with_.system else [])
            messages.append({"role": "user", "content": str(with_.prompt)})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if with_.temperature is not None:
            body["temperature"] = with_.temperature
        if with_.max_tokens is not None:
            body["max_tokens"] = with_.max_tokens
        if with_.response_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "response", "schema": with_.response_schema, "strict": True}}
        reply = _call(context, "/chat/completions", body)
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ConnectorError("llm: the reply has no choices[0].message.content",
                                 retriable=True) from None
        usage = {k: int((reply.get("usage") or {}).get(k) or 0)
                 for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        answered = str(reply.get("model") or model)
        out: dict[str, Any] = {"text": text, "model": answered, "usage": usage}
        cost = _cost(context.settings.get("llm_prices") or {}, answered, usage)
        if cost is None and answered != model:
            cost = _cost(context.settings.get("llm_prices") or {}, model, usage)
        if cost is not None:
            out["cost"] = cost
        context.log("info", f"{answered}: {usage['total_tokens']} tokens")
        if with_.response_schema is not None:
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ConnectorError(f"llm: the reply is not JSON ({exc})",
                                     retriable=True) from None
            problems = violations(value, with_.response_schema)
            if problems:
                raise ConnectorError("llm: the reply does not match response_schema: "
                                     + "; ".join(problems), retriable=True)
            out["json"] = value
        return out
