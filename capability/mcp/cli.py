"""``flask --app app mcp``: the MCP server over stdio, acting as the user of the key in
``APG_API_KEY`` (what a desktop MCP client launches). The key is checked at start and
again at every tool call, so a key revoked meanwhile is refused on the next call."""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.extensions import db
from app.security import api_keys
from app.security.actor import Actor

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

ENV = "APG_API_KEY"


def identify(token: str, _request: Any) -> Actor:
    """The key's user as they are now (roles, teams), narrowed by the key; in the app
    context of the call."""
    from capability.mcp import server

    try:
        use = api_keys.authenticate(db.session, token, None)
        api_keys.check_rate(use)
        return api_keys.actor_for(db.session, use, None, None)
    except api_keys.KeyRefused as exc:
        raise server.Refused(f"API key refused: {exc.reason}") from None
    except api_keys.RateLimited as exc:
        raise server.Refused("Too many requests for this API key",
                             retry_after=exc.retry_after) from None
    finally:
        db.session.remove()


async def _serve(mcp_server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await mcp_server.run(read, write, mcp_server.create_initialization_options())


@click.command("mcp")
@with_appcontext
def mcp_command() -> None:
    """Serve the MCP tools over stdio as the user of the key in APG_API_KEY."""
    token = os.environ.get(ENV, "").strip()
    if not token:
        raise click.ClickException(f"Set {ENV} to an API key (apk_...) to act as its user")
    # The SDK loads with the command, not with every `flask` command or process.
    import anyio

    from capability.mcp import server

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        actor = identify(token, None)
    except server.Refused as exc:
        raise click.ClickException(exc.message) from None
    print(f"MCP server on stdio, acting as {actor.username}", file=sys.stderr)
    anyio.run(_serve, server.build(app, partial(identify, token)))
