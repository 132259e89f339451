"""``redis`` (CONNECTORS.md): one command on a Redis server, through a ``redis``
connection (its URL names the database number)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from capability.connectors.fields import PasswordSecret, service_url
from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)


class RedisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=512, description="redis://host:port/db")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return service_url(value, ("redis", "rediss"))


def _client(connection: dict[str, Any], context: Context) -> Any:
    import redis

    parts = urlsplit(str(connection["url"]))
    port = parts.port or 6379
    address = context.endpoint(str(parts.hostname), port)
    db = int((parts.path or "/0").strip("/") or 0)
    timeout = min(context.remaining(), 30.0)
    return redis.Redis(host=address, port=port, db=db, username=parts.username or None,
                       password=connection.get("password") or None,
                       ssl=parts.scheme == "rediss", socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True)


def _retriable(exc: Exception) -> bool:
    import redis

    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


class RedisType(ConnectionType):
    type = "redis"
    Config = RedisConfig
    Secret = PasswordSecret
    description = "A Redis server and database number (the redis connector)."

    def test(self, context: Context) -> str:
        import redis

        assert context.connection is not None
        try:
            client = _client(context.connection, context)
            client.ping()
            version = client.info("server").get("redis_version")
        except redis.RedisError as exc:
            raise ConnectorError(f"{type(exc).__name__}: {exc}",
                                 retriable=_retriable(exc)) from None
        return f"connected: Redis {version}"


Command = Literal["get", "set", "incr", "delete", "lpush", "rpop", "hset", "hgetall",
                  "publish", "expire"]


class RedisWith(With):
    """Runs one Redis command (get set incr delete lpush rpop hset hgetall publish
    expire) on a redis connection. Output: {result}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "a redis connection of the run's team"))
    command: Command = Field(description="the command")
    key: str | None = Field(default=None, max_length=1024, description=(
        "the key (every command but publish)"))
    value: Any = Field(default=None, description=(
        "set, lpush (a list pushes each item), hset, publish; incr: the increment "
        "(default 1); objects and lists are stored as JSON text"))
    ttl: Templated[int | None] = Field(default=None, ge=1, description=(
        "seconds: an expiry for set, required by expire"))
    field: str | None = Field(default=None, max_length=1024, description=(
        "the hash field (hset)"))
    channel: str | None = Field(default=None, max_length=1024, description=(
        "the channel (publish)"))

    @model_validator(mode="after")
    def _needs(self) -> RedisWith:
        if self.command == "publish":
            if not self.channel:
                raise ValueError("publish needs channel")
        elif not self.key:
            raise ValueError(f"{self.command} needs key")
        if self.command == "hset" and not self.field:
            raise ValueError("hset needs field")
        if self.command == "expire" and self.ttl is None:
            raise ValueError("expire needs ttl")
        return self


def _text(value: Any) -> Any:
    import json

    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


class RedisConnector(Connector):
    type = "redis"
    With = RedisWith
    connection_types = ("redis",)
    example = {"connection": "cache", "command": "set", "key": "report:{{ run.id }}",
               "value": "{{ tasks.build.output }}", "ttl": 3600}

    def retriable(self, exc: Exception) -> bool:
        return _retriable(exc)

    def execute(self, context: Context) -> Any:
        import redis

        with_: RedisWith = context.with_
        assert context.connection is not None
        client = _client(context.connection, context)
        key, value = with_.key, _text(with_.value)
        try:
            match with_.command:
                case "get":
                    result = client.get(key)
                case "set":
                    result = bool(client.set(key, value, ex=with_.ttl))
                case "incr":
                    result = client.incr(key, int(with_.value or 1))
                case "delete":
                    result = client.delete(key)
                case "lpush":
                    values = with_.value if isinstance(with_.value, list) else [with_.value]
                    result = client.lpush(key, *[_text(v) for v in values])
                case "rpop":
                    result = client.rpop(key)
                case "hset":
                    result = client.hset(key, str(with_.field), value)
                case "hgetall":
                    result = client.hgetall(key)
                case "publish":
                    result = client.publish(str(with_.channel), value)
                case "expire":
                    result = bool(client.expire(key, int(with_.ttl or 0)))
        except redis.ResponseError as exc:
            raise ConnectorError(f"redis {with_.command}: {exc}") from None
        finally:
            client.close()
        return {"result": result}
