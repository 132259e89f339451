"""The MCP server as AI agents meet it: the SDK's own client over streamable HTTP
against `flask --app app up` (web, RQ workers and scheduler as real processes), and
over stdio against `flask --app app mcp`. The HTTP session is saved as
docs/mcp_transcript.md when APG_SAVE_TRANSCRIPT=1."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from flask import Flask

from tests.support.app import Factory, unique
from tests.support.engine import child_env
from tests.support.mcp import ROOT, Transcript, http_client, make_key, revoke, serve_up, tool

BROKEN = """name: {name}
tasks:
  - id: prepare
    type: python
    with:
      callable: tests.support.callables:add
      kwargs: {{a: "{{{{ params.amount }}}}", b: 1}}
  - id: publish
    type: noop
    depends_on: [prepare]
    with:
      value: {{total: "{{{{ tasks.prepare.output }}}}"}}
    retry: 3
"""


GOOD = """name: {name}
description: prepares a total, asks a person, publishes it
params:
  amount: {{type: integer, required: true}}
tasks:
  - id: prepare
    type: python
    with:
      callable: tests.support.callables:add
      kwargs: {{a: "{{{{ params.amount }}}}", b: 1}}
  - id: approve
    type: approval
    depends_on: [prepare]
    with:
      message: "Publish {{{{ tasks.prepare.output }}}}?"
  - id: publish
    type: noop
    depends_on: [approve]
    with:
      value: {{total: "{{{{ tasks.prepare.output }}}}"}}
"""


def _definition(name: str) -> str:
    return GOOD.format(name=name)


async def _until(client: Any, run_id: str, check: Callable[[dict[str, Any]], bool],
                 timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await tool(client, None, "run_status", {"run_id": run_id})
        if check(status):
            return dict(status)
        assert time.monotonic() < deadline, status
        await anyio.sleep(0.2)


def test_an_agent_saves_starts_and_guides_a_run_over_http(
        app: Flask, factory: Factory, processes: Callable[[str], Any]) -> None:
    from mcp.shared.exceptions import MCPError

    team = factory.team()
    author = factory.user("Author", [team])
    key_id, token = make_key(app, author["id"], ["read", "run", "author"], name="agent")
    _, reader = make_key(app, author["id"], ["read"], name="read-only")
    outsider = factory.user("Author", [factory.team()])
    _, outsider_key = make_key(app, outsider["id"], ["read", "run", "author"])
    base = serve_up(processes)
    name = unique("publish")
    log = Transcript("An agent on the MCP server: save, start, guide a run")

    async def agent() -> None:
        async with http_client(base, token) as client:
            listed = await client.list_tools()
            names = {t.name for t in listed.tools}
            assert {"workflow_list", "workflow_get", "workflow_validate", "workflow_save",
                    "run_start", "run_status", "run_cancel", "approval_answer",
                    "template_list", "template_use"} <= names
            log.note(f"`tools/list` → {', '.join(sorted(names))}")
            verdict = await tool(client, log, "workflow_validate",
                                 {"definition": BROKEN.format(name=name)})
            assert verdict["valid"] is False
            # Every error, each with its line: an undeclared param, a misspelt field.
            assert [(e["path"], e["line"]) for e in verdict["errors"]] == [
                ("tasks[0].with.kwargs.a", 7), ("tasks[1].retry", 13)]
            text = _definition(name)
            assert (await tool(client, log, "workflow_validate", {"definition": text}))["valid"]
            saved = await tool(client, log, "workflow_save",
                               {"team": team["name"], "definition": text})
            assert saved["created"] is True
            found = await tool(client, log, "workflow_list", {"query": name})
            assert [w["id"] for w in found["workflows"]] == [saved["id"]]
            got = await tool(client, log, "workflow_get", {"workflow": name})
            assert got["params_schema"]["required"] == ["amount"]
            with pytest.raises(MCPError) as refused:
                await tool(client, log, "run_start", {"workflow": name, "params": {}})
            assert refused.value.code == -32002
            started = await tool(client, log, "run_start",
                                 {"workflow": name, "params": {"amount": 41}})
            run_id = started["run_id"]
            waiting = await _until(client, run_id, lambda s: any(
                t["status"] == "waiting_approval" for t in s["tasks"]))
            log.call("run_status", {"run_id": run_id}, waiting)
            answered = await tool(client, log, "approval_answer", {
                "run_id": run_id, "task_id": "approve", "decision": "approve",
                "comment": "checked by the agent"})
            assert answered["run_id"] == run_id
            done = await _until(client, run_id, lambda s: s["status"] == "succeeded")
            final = await tool(client, log, "run_status", {"run_id": run_id, "outputs": True})
            assert done["progress"] == {"done": 3, "total": 3}
            assert final["outputs"]["publish"] == {"total": 42}
        async with http_client(base, reader) as client:
            with pytest.raises(MCPError) as refused:
                await tool(client, log, "run_start", {"workflow": name,
                                                      "params": {"amount": 1}})
            assert refused.value.code == -32003
        async with http_client(base, outsider_key) as client:
            with pytest.raises(MCPError) as refused:
                await tool(client, log, "workflow_get", {"workflow": saved["id"]})
            assert refused.value.code == -32001
        async with http_client(base, token) as client:
            await tool(client, None, "workflow_list", {})
            revoke(app, key_id)
            with pytest.raises(MCPError) as gone:
                await tool(client, log, "workflow_list", {})
            assert gone.value.code == -32003 and gone.value.message.endswith("revoked")
            assert gone.value.data == {"http_status": 401}

    anyio.run(agent)
    log.save()


def test_stdio_acts_as_the_key_and_refuses_it_once_revoked(
        app: Flask, factory: Factory) -> None:
    from mcp import Client, StdioServerParameters
    from mcp.shared.exceptions import MCPError

    team = factory.team()
    author = factory.user("Author", [team])
    key_id, token = make_key(app, author["id"], ["read", "author"])
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "flask", "--app", "app", "mcp"], cwd=str(ROOT),
        env=child_env(app, APG_API_KEY=token, APG_SYNC_SECURITY="0"))
    name = unique("stdio")

    async def agent() -> None:
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "workflow_save" in names
            saved = await tool(client, None, "workflow_save", {
                "team": team["name"],
                "definition": {"name": name, "tasks": [{"id": "a", "type": "noop"}]}})
            assert saved["created"] is True
            found = await tool(client, None, "workflow_list", {"query": name})
            assert [w["name"] for w in found["workflows"]] == [name]
            with pytest.raises(MCPError) as refused:
                await tool(client, None, "run_start", {"workflow": name})
            assert refused.value.code == -32003
            revoke(app, key_id)
            with pytest.raises(MCPError) as refused:
                await tool(client, None, "workflow_list", {})
            assert refused.value.code == -32003 and "revoked" in refused.value.message

    anyio.run(agent)
