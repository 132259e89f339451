"""The OpenAPI document's examples work: what Swagger UI's "Try it out" pre-fills for
the ``q`` argument of a list, info or item endpoint is answered with 200."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.api_support import UuidModelApi
from tests.support.app import api_token, auth

# Every list endpoint of ours must be in the document with a working example.
OURS = {"/api/v1/workflows/", "/api/v1/runs/", "/api/v1/teams/", "/api/v1/tenants/",
        "/api/v1/audit/", "/api/v1/secrets/"}


def q_parameters(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, the ``q`` parameter) of every GET in the document that takes one."""
    found = []
    for path, operations in spec["paths"].items():
        for param in operations.get("get", {}).get("parameters", []):
            if param.get("in") == "query" and param.get("name") == "q":
                found.append((path, param))
    return found


def example_of(param: dict[str, Any]) -> Any:
    return param.get("content", {}).get("application/json", {}).get("example")


def test_every_q_example_of_the_document_is_answered_with_200(
    app: Flask, client: FlaskClient, factory: Any
) -> None:
    admin = factory.user("Admin")
    factory.team()  # so that the teams list has a row to answer
    headers = auth(api_token(client, admin["username"]))
    spec = client.get("/api/v1/_openapi", headers=headers).get_json()
    params = q_parameters(spec)

    ours = {view.route_base + "/" for view in app.extensions["appbuilder"].baseviews
            if isinstance(view, UuidModelApi)}
    assert OURS <= ours
    assert OURS <= {path for path, _ in params}

    ids: dict[str, str] = {}
    for path, param in sorted(params):
        example = example_of(param)
        assert isinstance(example, dict), f"{path}: no example of q"
        if "{pk}" in path:
            # Swagger asks for the id; take one from the list of the same resource.
            listed = client.get(path.replace("{pk}", ""), headers=headers).get_json()
            if not listed.get("ids"):
                continue
            ids[path] = str(listed["ids"][0])
            url = path.replace("{pk}", ids[path])
        else:
            url = path
        # As Swagger UI sends an application/json parameter: the JSON text, URL-encoded.
        r = client.get(url, headers=headers, query_string={"q": json.dumps(example)})
        assert r.status_code == 200, (path, example, r.get_json())
    # The item endpoints that take q (FAB's security APIs) were exercised too.
    assert ids, "no item endpoint with a q example was called"


def test_a_list_example_orders_by_one_of_the_api_s_own_columns(client, factory) -> None:
    admin = factory.user("Admin")
    headers = auth(api_token(client, admin["username"]))
    spec = client.get("/api/v1/_openapi", headers=headers).get_json()
    examples = {path: example_of(p) for path, p in q_parameters(spec)}
    assert examples["/api/v1/runs/"] == {
        "page": 0, "page_size": 20, "order_column": "created_at", "order_direction": "desc"}
    assert examples["/api/v1/teams/"]["order_column"] == "name"
    # What Swagger UI made from FAB's schema before: both column selections, refused.
    generated = {"columns": ["string"], "filters": [{"col": "string", "opr": "string",
                                                     "value": 0}],
                 "keys": ["list_columns"], "order_column": "string", "order_direction": "asc",
                 "page": 0, "page_size": 0, "select_columns": ["string"]}
    r = client.get("/api/v1/teams/", headers=headers, query_string={"q": json.dumps(generated)})
    assert r.status_code == 400
    assert r.get_json()["message"] == "Cannot use both select and sel columns"
