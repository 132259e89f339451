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
from tests.support.mcp import (
    ROOT,
    Transcript,
    http_client,
    make_key,
    revoke,
    run_async,
    serve_up,
    tool,
)

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
description: prepares a total, has an agent classify and summarise it, asks a person
params:
  amount: {{type: integer, required: true}}
tasks:
  - id: prepare
    type: python
    with:
      callable: tests.support.callables:add
      kwargs: {{a: "{{{{ params.amount }}}}", b: 1}}
  - id: classify
    type: agent
    depends_on: [prepare]
    with:
      instructions: "Classify the amount {{{{ tasks.prepare.output }}}}: small below 100."
      inputs: {{amount: "{{{{ tasks.prepare.output }}}}"}}
      output_schema:
        type: object
        properties:
          size: {{type: string, enum: [small, large]}}
          reason: {{type: string}}
        required: [size, reason]
      model_hint: fast
  - id: summarise
    type: agent
    depends_on: [classify]
    with:
      instructions: "One line for the report about a {{{{ tasks.classify.output.size }}}} amount."
      inputs: {{size: "{{{{ tasks.classify.output.size }}}}"}}
      output_schema:
        type: object
        properties: {{summary: {{type: string, minLength: 5}}}}
        required: [summary]
  - id: approve
    type: approval
    depends_on: [summarise]
    with:
      message: "Publish: {{{{ tasks.summarise.output.summary }}}}?"
  - id: publish
    type: noop
    depends_on: [approve]
    with:
      value: {{total: "{{{{ tasks.prepare.output }}}}",
              size: "{{{{ tasks.classify.output.size }}}}"}}
"""


def _definition(name: str) -> str:
    return GOOD.format(name=name)


async def _guide(client: Any, log: Transcript, run_id: str, timeout: float = 90) -> None:
    """The agent's loop: workflow_next -> do the steps -> step_complete; approvals
    answered; until done. Its first answer to ``classify`` breaks the schema."""
    from mcp.shared.exceptions import MCPError

    deadline = time.monotonic() + timeout
    done_steps: list[str] = []
    quiet = None
    while True:
        assert time.monotonic() < deadline, "the run did not finish"
        nxt = await tool(client, None, "workflow_next", {"run_id": run_id})
        seen = (nxt["status"], nxt["progress"], [s["task_id"] for s in nxt["steps"]],
                [a["task_id"] for a in nxt["approvals"]])
        if seen != quiet:  # the transcript keeps the answers that changed
            log.call("workflow_next", {"run_id": run_id}, nxt)
            quiet = seen
        if nxt["done"]:
            return
        for step in nxt["steps"]:
            if step["task_id"] == "classify":
                assert step["inputs"] == {"amount": 42} and step["model_hint"] == "fast"
                with pytest.raises(MCPError) as refused:
                    await tool(client, log, "step_complete", {
                        "run_id": run_id, "task_id": "classify",
                        "output": {"size": "medium"}})
                assert refused.value.code == -32002
                errors = refused.value.data["errors"]
                assert any("size" in e["path"] for e in errors), errors
                output: dict[str, Any] = {"size": "small", "reason": "42 is below 100"}
            else:
                assert step["inputs"] == {"size": "small"}
                output = {"summary": "A small amount of 42 is ready to publish."}
            answer = await tool(client, log, "step_complete", {
                "run_id": run_id, "task_id": step["task_id"], "output": output})
            assert answer["status"] == "succeeded"
            done_steps.append(step["task_id"])
        if nxt["approvals"]:
            pending = await tool(client, log, "approval_list", {})
            assert [a["task_id"] for a in pending["approvals"]
                    if a["run_id"] == run_id] == ["approve"]
            answered = await tool(client, log, "approval_answer", {
                "run_id": run_id, "task_id": "approve", "decision": "approve",
                "comment": "checked by the agent"})
            assert answered["run_id"] == run_id
        if not nxt["steps"] and not nxt["approvals"]:
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
                    "run_start", "run_status", "run_cancel", "workflow_next",
                    "step_complete", "step_fail", "approval_list", "approval_answer",
                    "template_list", "template_use"} == names
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
            await _guide(client, log, run_id)
            final = await tool(client, log, "run_status", {"run_id": run_id, "outputs": True})
            assert final["status"] == "succeeded"
            assert final["progress"] == {"done": 5, "total": 5}
            assert final["outputs"]["publish"] == {"total": 42, "size": "small"}
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

    run_async(agent)
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

    run_async(agent)
