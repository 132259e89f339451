"""Publishing to brokers (CONNECTORS.md): ``amqp`` (RabbitMQ and other AMQP 0-9-1
brokers, with publisher confirms), ``mqtt`` and ``nats`` (core or JetStream, with the
stream's acknowledgement). Each connects to the address the egress policy checked and
publishes one message; a value that is not text is sent as JSON."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from capability.connectors.fields import PasswordSecret, service_url
from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


# -- AMQP -----------------------------------------------------------------------------

class AmqpConfig(_Model):
    url: str = Field(min_length=1, max_length=1024, description="amqp://user@host:port/vhost")

    @field_validator("url")
    @classmethod
    def _amqp(cls, value: str) -> str:
        return service_url(value, ("amqp", "amqps"))


def _amqp_parameters(connection: dict[str, Any], context: Context) -> Any:
    import pika

    parts = urlsplit(str(connection["url"]))
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    address = context.endpoint(str(parts.hostname), port)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    credentials = pika.PlainCredentials(unquote(parts.username or "guest"),
                                        str(connection.get("password") or ""))
    timeout = min(context.remaining(), 30.0)
    ssl_options = None
    if parts.scheme == "amqps":
        import ssl

        ssl_options = pika.SSLOptions(ssl.create_default_context(), str(parts.hostname))
    return pika.ConnectionParameters(host=address, port=port, virtual_host=vhost,
                                     credentials=credentials, socket_timeout=timeout,
                                     blocked_connection_timeout=timeout,
                                     connection_attempts=1, ssl_options=ssl_options)


def _amqp_retriable(exc: Exception) -> bool:
    import pika.exceptions as errors

    if isinstance(exc, errors.ProbableAuthenticationError | errors.ProbableAccessDeniedError):
        return False
    return isinstance(exc, errors.AMQPConnectionError | errors.UnroutableError
                      | errors.NackError | errors.StreamLostError | ConnectionError
                      | TimeoutError)


class AmqpType(ConnectionType):
    type = "amqp"
    Config = AmqpConfig
    Secret = PasswordSecret
    description = "An AMQP 0-9-1 broker (RabbitMQ): URL with user and vhost, password."

    def test(self, context: Context) -> str:
        import pika

        assert context.connection is not None
        try:
            broker = pika.BlockingConnection(_amqp_parameters(context.connection, context))
            product = broker._impl.server_properties.get("product", b"")
            version = broker._impl.server_properties.get("version", b"")
            broker.close()
        except Exception as exc:
            raise ConnectorError(f"{type(exc).__name__}: {exc}",
                                 retriable=_amqp_retriable(exc)) from None
        return f"connected: {_text(product)} {_text(version)}".strip()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AmqpWith(With):
    """Publishes one message to an AMQP exchange (RabbitMQ), confirmed by the broker.
    Output: {published: true}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "an amqp connection of the run's team"))
    exchange: str = Field(default="", max_length=255, description=(
        'the exchange; "" is the default one, which routes by queue name'))
    routing_key: str = Field(default="", max_length=255, description="the routing key")
    body: Any = Field(default=None, description=(
        "the message: text as it is, anything else as JSON"))
    headers: Templated[dict[str, Any]] = Field(default_factory=dict, description=(
        "message headers"))
    persistent: Templated[bool] = Field(default=True, description=(
        "ask the broker to keep it on disk"))
    mandatory: Templated[bool] = Field(default=True, description=(
        "fail when no queue receives it"))


class AmqpConnector(Connector):
    type = "amqp"
    With = AmqpWith
    connection_types = ("amqp",)
    example = {"connection": "broker", "exchange": "orders", "routing_key": "order.created",
               "body": {"id": "{{ params.order }}"}}

    def retriable(self, exc: Exception) -> bool:
        return _amqp_retriable(exc)

    def execute(self, context: Context) -> Any:
        import pika

        with_: AmqpWith = context.with_
        assert context.connection is not None
        broker = pika.BlockingConnection(_amqp_parameters(context.connection, context))
        try:
            channel = broker.channel()
            channel.confirm_delivery()
            properties = pika.BasicProperties(
                headers={**with_.headers, "idempotency-key": context.attempt_id},
                delivery_mode=2 if with_.persistent else 1,
                content_type="text/plain" if isinstance(with_.body, str)
                else "application/json", message_id=context.attempt_id)
            try:
                channel.basic_publish(with_.exchange, with_.routing_key, _payload(with_.body),
                                      properties, mandatory=with_.mandatory)
            except pika.exceptions.UnroutableError:
                raise ConnectorError(f"no queue is bound to exchange {with_.exchange!r} "
                                     f"with routing key {with_.routing_key!r}") from None
        finally:
            if broker.is_open:
                broker.close()
        return {"published": True}


# -- MQTT -----------------------------------------------------------------------------

class MqttConfig(_Model):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = Field(default=None, max_length=256)
    tls: bool = False


def _mqtt_publish(connection: dict[str, Any], context: Context, topic: str | None,
                  payload: bytes, qos: int, retain: bool) -> None:
    import paho.mqtt.client as mqtt

    host, port = str(connection["host"]), int(connection.get("port") or 1883)
    address = context.endpoint(host, port)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"apg-{context.attempt_id}"[:23])
    if connection.get("username"):
        client.username_pw_set(str(connection["username"]),
                               str(connection.get("password") or "") or None)
    target = address
    if connection.get("tls"):
        client.tls_set()  # the certificate is checked against the name: connect by name
        target = host
    timeout = min(context.remaining(), 30.0)
    reason = client.connect(target, port, keepalive=max(5, int(timeout)))
    if reason != mqtt.MQTT_ERR_SUCCESS:
        raise ConnectorError(f"mqtt connect: {mqtt.error_string(reason)}", retriable=True)
    client.loop_start()
    try:
        if topic is not None:
            sent = client.publish(topic, payload, qos=qos, retain=retain)
            sent.wait_for_publish(timeout=timeout)
            if not sent.is_published():
                raise ConnectorError(f"mqtt publish to {topic!r}: not acknowledged within "
                                     f"{timeout:g}s", retriable=True)
    finally:
        client.disconnect()
        client.loop_stop()


class MqttType(ConnectionType):
    type = "mqtt"
    Config = MqttConfig
    Secret = PasswordSecret
    description = "An MQTT broker (Mosquitto...): host, port, login, TLS."

    def test(self, context: Context) -> str:
        assert context.connection is not None
        try:
            _mqtt_publish(context.connection, context, None, b"", 0, False)
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(f"{type(exc).__name__}: {exc}", retriable=True) from None
        return "connected"


class MqttWith(With):
    """Publishes one message to an MQTT topic. Output: {published: true}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "an mqtt connection of the run's team"))
    topic: str = Field(min_length=1, max_length=65535, description="the topic")
    payload: Any = Field(default=None, description="text as it is, anything else as JSON")
    qos: Templated[int] = Field(default=1, ge=0, le=2, description="quality of service")
    retain: Templated[bool] = Field(default=False, description=(
        "keep it as the topic's last message"))


class MqttConnector(Connector):
    type = "mqtt"
    With = MqttWith
    connection_types = ("mqtt",)
    example = {"connection": "plant", "topic": "line/1/done", "payload": {"run": "{{ run.id }}"}}

    def retriable(self, exc: Exception) -> bool:
        return isinstance(exc, ConnectionError | TimeoutError | OSError)

    def execute(self, context: Context) -> Any:
        with_: MqttWith = context.with_
        assert context.connection is not None
        _mqtt_publish(context.connection, context, with_.topic, _payload(with_.payload),
                      with_.qos, with_.retain)
        return {"published": True}


# -- NATS -----------------------------------------------------------------------------

class NatsConfig(_Model):
    servers: list[str] = Field(min_length=1, description="nats://host:port, one or more")

    @field_validator("servers")
    @classmethod
    def _nats(cls, values: list[str]) -> list[str]:
        for value in values:
            parts = urlsplit(value)
            if parts.scheme not in ("nats", "tls") or not parts.hostname:
                raise ValueError(f"{value!r}: a nats:// or tls:// URL with a host")
        return values


class NatsSecret(_Model):
    token: str = Field(default="", max_length=4096)


def _nats_servers(connection: dict[str, Any], context: Context) -> list[str]:
    out = []
    for server in connection["servers"]:
        parts = urlsplit(str(server))
        port = parts.port or 4222
        if parts.scheme == "tls":  # TLS checks the name: connect by name
            context.endpoint(str(parts.hostname), port)
            out.append(str(server))
        else:
            out.append(f"nats://{context.endpoint(str(parts.hostname), port)}:{port}")
    return out


async def _nats(connection: dict[str, Any], context: Context, subject: str | None,
                payload: bytes, jetstream: bool) -> int | None:
    import nats

    timeout = min(context.remaining(), 30.0)
    client = await nats.connect(servers=_nats_servers(connection, context),
                                token=connection.get("token") or None,
                                connect_timeout=timeout, max_reconnect_attempts=0,
                                allow_reconnect=False)
    try:
        if subject is None:
            return None
        if jetstream:
            ack = await client.jetstream(timeout=timeout).publish(
                subject, payload, headers={"Nats-Msg-Id": context.attempt_id})
            return int(ack.seq)
        await client.publish(subject, payload)
        await client.flush(timeout=max(1, int(timeout)))
        return None
    finally:
        await client.close()


def run_async(coroutine: Any) -> Any:
    """Run a coroutine to its end from synchronous code: here when no event loop runs in
    this thread (a worker's job), else on a thread of its own (a host that runs a loop
    in this thread cannot run another in it)."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _nats_run(connection: dict[str, Any], context: Context, subject: str | None,
              payload: bytes, jetstream: bool) -> int | None:
    try:
        return run_async(_nats(connection, context, subject, payload, jetstream))
    except ConnectorError:
        raise
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        transient = type(exc).__name__ in ("NoServersError", "TimeoutError",
                                           "ConnectionClosedError", "NoRespondersError")
        raise ConnectorError(f"nats: {type(exc).__name__}: {text}",
                             retriable=transient) from None


class NatsType(ConnectionType):
    type = "nats"
    Config = NatsConfig
    Secret = NatsSecret
    description = "A NATS server or cluster (with or without JetStream): servers, token."

    def test(self, context: Context) -> str:
        assert context.connection is not None
        _nats_run(context.connection, context, None, b"", False)
        return "connected"


class NatsWith(With):
    """Publishes one message to a NATS subject; with jetstream: true, to the stream that
    holds the subject, acknowledged. Output: {published: true, seq?}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "a nats connection of the run's team"))
    subject: str = Field(min_length=1, max_length=255, description="the subject")
    payload: Any = Field(default=None, description="text as it is, anything else as JSON")
    jetstream: Templated[bool] = Field(default=False, description=(
        "publish to JetStream and wait for its acknowledgement"))


class NatsConnector(Connector):
    type = "nats"
    With = NatsWith
    connection_types = ("nats",)
    example = {"connection": "bus", "subject": "orders.created", "payload": {"id": 7},
               "jetstream": True}

    def execute(self, context: Context) -> Any:
        with_: NatsWith = context.with_
        assert context.connection is not None
        seq = _nats_run(context.connection, context, with_.subject, _payload(with_.payload),
                        with_.jetstream)
        return {"published": True, **({"seq": seq} if seq is not None else {})}
