"""The SDK's low-level MCP server around the tools (``tools``): ``tools/list`` publishes
each tool's JSON Schemas, ``tools/call`` checks the arguments, the caller's key and its
scope, runs the handler on a worker thread inside the app context (the services are
synchronous), and answers with the result as structured content.

Errors are JSON-RPC errors (AGENTS.md): ``-32001`` not found or not visible, ``-32002``
invalid (``data.errors`` lists every problem), ``-32003`` not allowed (the key's scope,
the user's role); an unknown tool or arguments that break the tool's schema are
``-32602`` (invalid params) with ``data.errors``; anything unexpected ``-32603`` without
its details (logged). A refused mutation, and every refusal by scope, is audited.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import mcp_types as types
from flask import Flask
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from app.audit.recorder import build_event, record
from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceError,
    TooManyRequests,
    pydantic_errors,
)
from app.extensions import db
from app.security.actor import Actor
from capability.mcp.tools import TOOLS, Call, Tool

log = logging.getLogger(__name__)

NOT_FOUND = -32001
INVALID = -32002
NOT_ALLOWED = -32003
# Outside the contract's three: a quota or the key's rate limit (``data.retry_after``).
RETRY_LATER = -32000

NAME = "apg-workflow-orchestration"
INSTRUCTIONS = (
    "Workflows of typed tasks run on workers. Find one with workflow_list/workflow_get, "
    "check a definition with workflow_validate, save it with workflow_save, start it with "
    "run_start. To guide a run: loop workflow_next -> do the steps it hands you -> "
    "step_complete (or step_fail) -> approval_answer where asked, until done is true."
)

# Who calls: the actor of the request (``ctx.request``: the HTTP request, None on
# stdio), checked anew at every call; raises ``Refused`` when the key no longer holds.
Identify = Callable[[Any], Actor]


class Refused(Exception):
    """The caller's key was refused (revoked, expired...) or is over its rate limit."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def tool_list() -> list[types.Tool]:
    return [
        types.Tool(
            name=tool.name,
            title=tool.name.replace("_", " "),
            description=f"{tool.description} (scope: {tool.scope})",
            input_schema=tool.arguments.model_json_schema(),
            output_schema=tool.result.model_json_schema(),
            annotations=types.ToolAnnotations(
                read_only_hint=not tool.mutates,
                destructive_hint=tool.name == "run_cancel" if tool.mutates else None,
                idempotent_hint=tool.name in {"workflow_save", "run_cancel"} or None,
                open_world_hint=False,
            ),
        )
        for tool in TOOLS.values()
    ]


def _error(exc: ServiceError) -> MCPError:
    if isinstance(exc, NotFound):
        return MCPError(NOT_FOUND, exc.message)
    if isinstance(exc, Forbidden):
        return MCPError(NOT_ALLOWED, exc.message)
    if isinstance(exc, TooManyRequests):
        return MCPError(RETRY_LATER, exc.message, {"retry_after": exc.retry_after})
    data: dict[str, Any] = {"errors": exc.errors}
    if isinstance(exc, Conflict):
        data["conflict"] = True
    return MCPError(INVALID, exc.message, data)


def _audit(actor: Actor, tool: Tool, exc: ServiceError, outcome: str) -> None:
    db.session.rollback()
    record(db.session, build_event(
        tool.acting(actor), f"mcp:{tool.name}", "mcp_tool", tool.name, outcome=outcome,
        after={"message": exc.message, "errors": exc.errors}))
    db.session.commit()


def call(app: Flask, identify: Identify, request: Any, tool: Tool, args: Any) -> dict[str, Any]:
    """One tool call, on a worker thread: its own app context and database session."""
    with app.app_context():
        try:
            actor = identify(request)
        except Refused as exc:
            if exc.retry_after is not None:
                raise MCPError(RETRY_LATER, exc.message,
                               {"retry_after": exc.retry_after}) from None
            raise MCPError(NOT_ALLOWED, exc.message) from None
        if not actor.may(tool.scope):
            refusal = Forbidden(f"This key lacks the {tool.scope!r} scope that "
                                f"{tool.name} needs")
            _audit(actor, tool, refusal, "denied")
            raise _error(refusal)
        try:
            result = tool.handler(Call(db.session, tool.acting(actor), app), args)
        except ServiceError as exc:
            if tool.mutates and not tool.audits_refusals and not isinstance(exc, NotFound):
                _audit(actor, tool, exc, "denied" if isinstance(exc, Forbidden) else "error")
            raise _error(exc) from None
        # A result always matches the schema published for it (clients check).
        tool.result.model_validate(result)
        return result


def build(app: Flask, identify: Identify) -> Server[Any]:
    """The MCP server of ``app``; ``identify`` says who calls (HTTP: the request's key;
    stdio: the key in APG_API_KEY)."""
    listed = tool_list()

    async def list_tools(ctx: ServerRequestContext[Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: ServerRequestContext[Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = TOOLS.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}",
                           {"errors": [{"path": "name", "message": "no such tool"}]})
        try:
            args = tool.arguments.model_validate(params.arguments or {})
        except ValidationError as exc:
            raise MCPError(types.INVALID_PARAMS, f"Invalid arguments for {tool.name}",
                           {"errors": pydantic_errors(exc)}) from None
        try:
            result = await anyio.to_thread.run_sync(
                partial(call, app, identify, ctx.request, tool, args))
        except MCPError:
            raise
        except Exception:
            log.exception("MCP tool %s failed", tool.name)
            raise MCPError(types.INTERNAL_ERROR, f"{tool.name} failed: internal error") from None
        text = json.dumps(result, ensure_ascii=False, default=str)
        return types.CallToolResult(content=[types.TextContent(text=text)],
                                    structured_content=json.loads(text))

    return Server(NAME, version=_version(), title="APG Workflow Orchestration",
                  instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apg-workflow-orchestration")
    except PackageNotFoundError:
        return "0"
