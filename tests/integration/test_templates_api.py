"""The template library (every file valid, every category present), its API by role and
team, and workflow bundles: export, import round trip, a changed checksum, an unknown
field, and each ``on_conflict`` mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from capability.templates import service as templates
from tests.support.app import Factory, api_token, auth

SLUGS = list(templates.library())


@pytest.mark.parametrize("path", sorted(templates.LIBRARY.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_template_file_is_valid(app: Flask, path: Path) -> None:
    with app.app_context():
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert templates.problems(raw) == []
    assert raw["slug"] == path.stem
    assert set(templates.FIELDS) <= set(raw)


def test_the_library_covers_every_category() -> None:
    assert len([s for s, t in templates.library().items()
                if t.category != "agent-procedures"]) >= 20
    assert {t.category for t in templates.library().values()} == set(templates.CATEGORIES)


def _user(client: FlaskClient, factory: Factory, role: str, team: Any) -> dict[str, str]:
    return auth(api_token(client, factory.user(role, teams=[team])["username"]))


@pytest.fixture()
def people(client: FlaskClient, factory: Factory) -> dict[str, Any]:
    team, other = factory.team(), factory.team()
    return {"team": team, "other": other,
            **{role: _user(client, factory, role, team)
               for role in ("Author", "Operator", "Viewer")},
            "other_author": _user(client, factory, "Author", other)}


@pytest.mark.parametrize("role", ["Author", "Operator", "Viewer"])
def test_every_role_reads_and_filters_the_library(client: FlaskClient, people: dict[str, Any],
                                                  role: str) -> None:
    h = people[role]
    every = client.get("/api/v1/templates/", headers=h).get_json()
    assert every["count"] == len(SLUGS)
    etl = client.get("/api/v1/templates/?category=etl-postgres", headers=h).get_json()
    assert etl["count"] >= 2 and {t["category"] for t in etl["result"]} == {"etl-postgres"}
    found = client.get("/api/v1/templates/?search=alertmanager slack", headers=h).get_json()
    assert [t["slug"] for t in found["result"]] == ["alertmanager-to-slack"]
    one = client.get("/api/v1/templates/sql-daily-email-report", headers=h).get_json()
    assert one["result"]["definition"]["name"] == "sql-daily-email-report"
    assert "tasks:" in one["result"]["source"]
    assert client.get("/api/v1/templates/nope", headers=h).status_code == 404


def test_use_by_role_and_team(client: FlaskClient, people: dict[str, Any]) -> None:
    team = people["team"]["name"]
    url = "/api/v1/templates/webhook-to-slack/use"
    for role in ("Operator", "Viewer"):
        r = client.post(url, headers=people[role], json={"team": team})
        assert r.status_code == 403, (role, r.get_json())
    # Another team's Author: that team is not one they can see (as workflow creation).
    r = client.post(url, headers=people["other_author"], json={"team": team})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "team"
    r = client.post(url, headers=people["Author"], json={
        "team": team, "name": "chat-relay", "params_defaults": {"title_field": "subject"}})
    assert r.status_code == 201, r.get_json()
    made = r.get_json()["result"]
    assert made["name"] == "chat-relay" and made["version"] == 1
    assert made["definition"]["params"]["title_field"]["default"] == "subject"
    assert made["source_format"] == "yaml"
    again = client.post(url, headers=people["Author"], json={"team": team, "name": "chat-relay"})
    assert again.status_code == 409
    bad = client.post(url, headers=people["Author"], json={
        "team": team, "name": "x2", "params_defaults": {"nope": 1, "title_field": 5}})
    assert bad.status_code == 422
    assert [e["path"] for e in bad.get_json()["errors"]] == ["params_defaults.nope"]
    wrong_type = client.post(url, headers=people["Author"], json={
        "team": team, "name": "x3", "params_defaults": {"title_field": 5}})
    assert wrong_type.status_code == 422
    assert "params.title_field.default" in wrong_type.get_json()["errors"][0]["path"]
    listed = client.get("/api/v1/workflows/", headers=people["Author"]).get_json()
    assert [w["name"] for w in listed["result"]] == ["chat-relay"]


def _workflow_with_triggers(client: FlaskClient, people: dict[str, Any]) -> str:
    h, team = people["Author"], people["team"]["name"]
    r = client.post("/api/v1/templates/sql-daily-email-report/use", headers=h,
                    json={"team": team})
    wid = r.get_json()["id"]
    assert client.post("/api/v1/schedules/", headers=h, json={
        "workflow_id": wid, "cron": "0 7 * * *", "timezone": "Europe/Paris",
        "params": {"title": "Morning"}}).status_code == 201
    assert client.post("/api/v1/webhooks/", headers=h, json={
        "workflow_id": wid, "name": "manual"}).status_code == 201
    assert client.post("/api/v1/event-triggers/", headers=h, json={
        "workflow_id": wid, "on": {"event": "orders.loaded"}}).status_code == 201
    return str(wid)


def test_export_import_round_trip_and_conflicts(client: FlaskClient,
                                                people: dict[str, Any]) -> None:
    wid = _workflow_with_triggers(client, people)
    exported = client.get(f"/api/v1/workflows/{wid}/export", headers=people["Viewer"])
    assert exported.status_code == 200 and exported.mimetype == "application/yaml"
    text = exported.get_data(as_text=True)
    bundle = yaml.safe_load(text)
    assert bundle["checksum"].startswith("sha256:")
    assert bundle["connections"] == [{"name": "mail", "type": "smtp"},
                                     {"name": "warehouse", "type": "postgres"}]
    assert bundle["triggers"]["schedules"][0]["cron"] == "0 7 * * *"
    assert bundle["triggers"]["webhooks"][0]["name"] == "manual"
    assert "token" not in text and "/hooks/" not in text
    assert bundle["triggers"]["events"] == [{"on": {"event": "orders.loaded"}, "params": {},
                                             "enabled": True}]
    # Another team's workflow cannot be exported (not revealed).
    assert client.get(f"/api/v1/workflows/{wid}/export",
                      headers=people["other_author"]).status_code == 404

    other = people["other"]["name"]
    oh = people["other_author"]
    made = client.post("/api/v1/workflows/import", headers=oh,
                       json={"team": other, "bundle": text})
    assert made.status_code == 201, made.get_json()
    result = made.get_json()["result"]
    assert result["mode"] == "create" and result["workflow"]["name"] == "sql-daily-email-report"
    assert result["missing_connections"] == ["mail", "warehouse"]
    assert result["webhooks"][0]["token"]  # a new token, shown once
    new_id = result["workflow"]["id"]
    again = client.get(f"/api/v1/workflows/{new_id}/export", headers=oh).get_data(as_text=True)
    re_read = yaml.safe_load(again)
    for key in ("workflow", "triggers", "connections", "secrets"):
        if key == "workflow":
            assert re_read[key]["definition"] == bundle[key]["definition"]
        else:
            assert re_read[key] == bundle[key]

    assert client.post("/api/v1/workflows/import", headers=oh, json={
        "team": other, "bundle": text, "on_conflict": "fail"}).status_code == 409
    renamed = client.post("/api/v1/workflows/import", headers=oh, json={
        "team": other, "bundle": text, "on_conflict": "rename"}).get_json()["result"]
    assert renamed["mode"] == "rename"
    assert renamed["workflow"]["name"] == "sql-daily-email-report-2"
    versioned = client.post("/api/v1/workflows/import", headers=oh, json={
        "team": other, "bundle": bundle, "on_conflict": "new_version"}).get_json()["result"]
    assert versioned["workflow"]["id"] == new_id and versioned["workflow"]["version"] == 2
    assert versioned["triggers_skipped"] is True
    # Operators and Viewers may export, not import; the import is audited.
    assert client.post("/api/v1/workflows/import", headers=people["Operator"], json={
        "team": people["team"]["name"], "bundle": text,
        "on_conflict": "rename"}).status_code == 403


def test_a_changed_bundle_or_an_unknown_field_creates_nothing(
        client: FlaskClient, people: dict[str, Any]) -> None:
    wid = _workflow_with_triggers(client, people)
    bundle = yaml.safe_load(client.get(f"/api/v1/workflows/{wid}/export",
                                       headers=people["Author"]).get_data(as_text=True))
    oh, other = people["other_author"], people["other"]["name"]
    tampered = {**bundle, "workflow": {**bundle["workflow"], "description": "changed"}}
    r = client.post("/api/v1/workflows/import", headers=oh,
                    json={"team": other, "bundle": yaml.safe_dump(tampered)})
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{"path": "bundle.checksum", "message":
                                       "does not match the content (SHA-256): the bundle "
                                       "was changed"}]
    extra = {**bundle, "triggers": {**bundle["triggers"], "queues": []}}
    r = client.post("/api/v1/workflows/import", headers=oh, json={"team": other, "bundle": extra})
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{"path": "bundle.triggers.queues",
                                       "message": "unknown field"}]
    r = client.post("/api/v1/workflows/import", headers=oh,
                    json={"team": other, "bundle": bundle, "on_conflict": "merge"})
    assert r.status_code == 422 and r.get_json()["errors"][0]["path"] == "on_conflict"
    assert client.get("/api/v1/workflows/", headers=oh).get_json()["count"] == 0
