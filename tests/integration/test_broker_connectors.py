"""``amqp``, ``mqtt`` and ``nats`` against this machine's RabbitMQ, Mosquitto and NATS
(JetStream): each test reads back what the task published."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pika
from flask import Flask
from flask.testing import FlaskClient

from capability.connectors.messaging import run_async
from tests.support.runs import run_to_end


def _connection(client: FlaskClient, op: dict[str, Any], **body: Any) -> str:
    r = client.post("/api/v1/connections/", headers=op["h"],
                    json={"team": op["team"]["name"], "name": "broker", **body})
    assert r.status_code == 201, r.get_json()
    tested = client.post(f"/api/v1/connections/{r.get_json()['id']}/test", headers=op["h"])
    assert tested.get_json()["ok"] is True, tested.get_json()
    return str(r.get_json()["id"])


def test_amqp_publish_is_consumed_back(app: Flask, client: FlaskClient,
                                       op: dict[str, Any]) -> None:
    queue = f"apg-test-{uuid.uuid4().hex[:8]}"
    broker = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest")))
    channel = broker.channel()
    channel.queue_declare(queue, auto_delete=True)
    try:
        _connection(client, op, type="amqp", config={"url": "amqp://guest@127.0.0.1:5672/"},
                    secret={"password": "guest"})
        run = run_to_end(app, client, op, [
            {"id": "pub", "type": "amqp", "with": {
                "connection": "broker", "routing_key": queue, "body": {"order": 7},
                "headers": {"source": "apg"}}},
            {"id": "lost", "type": "amqp", "with": {
                "connection": "broker", "routing_key": f"{queue}-nobody", "body": "x"}}])
        assert run["by_task"]["pub"]["output"] == {"published": True}
        assert "no queue is bound" in run["by_task"]["lost"]["error"]
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None and json.loads(body) == {"order": 7}
        assert properties.headers["source"] == "apg" and properties.delivery_mode == 2
        assert properties.content_type == "application/json"
    finally:
        channel.queue_delete(queue)
        broker.close()


def test_mqtt_publish_reaches_a_subscriber(app: Flask, client: FlaskClient,
                                           op: dict[str, Any]) -> None:
    import paho.mqtt.client as mqtt

    topic = f"apg/test/{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []
    ready, arrived = threading.Event(), threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_subscribe = lambda *a: ready.set()
    listener.on_message = lambda c, u, m: (got.append(m.payload), arrived.set())
    listener.connect("127.0.0.1", 1883)
    listener.loop_start()
    listener.subscribe(topic, qos=1)
    assert ready.wait(10)
    try:
        _connection(client, op, type="mqtt", config={"host": "127.0.0.1", "port": 1883})
        run = run_to_end(app, client, op, [{"id": "pub", "type": "mqtt", "with": {
            "connection": "broker", "topic": topic, "payload": {"line": 1}, "qos": 1}}])
        assert run["by_task"]["pub"]["output"] == {"published": True}, run["by_task"]["pub"]
        assert arrived.wait(10) and json.loads(got[0]) == {"line": 1}
    finally:
        listener.loop_stop()
        listener.disconnect()


def test_nats_jetstream_publish_is_in_the_stream(app: Flask, client: FlaskClient,
                                                 op: dict[str, Any]) -> None:
    import nats

    stream = f"APGTEST{uuid.uuid4().hex[:8].upper()}"
    subject = f"apgtest.{stream.lower()}.created"

    async def make() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        await nc.jetstream().add_stream(name=stream, subjects=[subject])
        await nc.close()

    async def read(seq: int) -> bytes:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            msg = await nc.jetstream().get_msg(stream, seq)
            return bytes(msg.data or b"")
        finally:
            await nc.jetstream().delete_stream(stream)
            await nc.close()

    run_async(make())
    _connection(client, op, type="nats", config={"servers": ["nats://127.0.0.1:4222"]})
    run = run_to_end(app, client, op, [
        {"id": "js", "type": "nats", "with": {"connection": "broker", "subject": subject,
                                              "payload": {"id": 7}, "jetstream": True}},
        {"id": "core", "type": "nats", "with": {"connection": "broker",
                                                "subject": "apgtest.core", "payload": "hi"}}])
    assert run["status"] == "succeeded", {k: v.get("error") for k, v in run["by_task"].items()}
    out = run["by_task"]["js"]["output"]
    assert out["published"] is True and out["seq"] == 1
    assert run["by_task"]["core"]["output"] == {"published": True}
    assert json.loads(run_async(read(out["seq"]))) == {"id": 7}
