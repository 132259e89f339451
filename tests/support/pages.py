"""Workflows and runs made through the API for the page and live-update tests, and a
browser-like session login (``headers``: an Author's API token)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import PASSWORD, unique

DIAMOND = [
    {"id": "fetch", "type": "noop", "with": {"value": {"orders": [1, 2]}}},
    {"id": "left", "type": "noop", "depends_on": ["fetch"]},
    {"id": "right", "type": "noop", "depends_on": ["fetch"]},
    {"id": "join", "type": "noop", "depends_on": ["left", "right"],
     "with": {"value": "{{ tasks.fetch.output.orders | length }}"}},
]
APPROVAL = [
    {"id": "ask", "type": "approval", "with": {"message": "Ship the release?"}},
    {"id": "ship", "type": "noop", "depends_on": ["ask"]},
]


def make_workflow(client: FlaskClient, headers: dict[str, str], team: str,
                  tasks: list[dict[str, Any]], **extra: Any) -> str:
    definition = {"name": unique("wf"), "tasks": tasks, **extra}
    r = client.post("/api/v1/workflows/", headers=headers,
                    json={"team": team, "definition": definition})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def start(client: FlaskClient, headers: dict[str, str], wid: str, **body: Any) -> str:
    r = client.post(f"/api/v1/workflows/{wid}/runs", headers=headers, json=body)
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def login(app: Flask, user: dict[str, Any]) -> FlaskClient:
    client = app.test_client()
    r = client.post("/login/", data={"username": user["username"], "password": PASSWORD})
    assert r.status_code == 302, r.get_data(as_text=True)
    return client


