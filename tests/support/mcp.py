"""MCP tests' helpers: API keys, the app served by `flask --app app up` on a free port,
the SDK's own client over streamable HTTP, and a transcript of what a client said and
heard (docs/mcp_transcript.md when APG_SAVE_TRANSCRIPT=1)."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from flask import Flask

ROOT = Path(__file__).resolve().parents[2]
TRANSCRIPT = ROOT / "docs" / "mcp_transcript.md"


def run_async(main: Callable[[], Awaitable[None]]) -> None:
    """``anyio.run(main)`` on a thread of its own: a session's browser tests leave
    Playwright's event loop running in the main thread, where anyio refuses to start
    another."""
    import threading

    import anyio

    failure: list[BaseException] = []

    def body() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name="mcp-client")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def make_key(app: Flask, user_id: int, scopes: list[str],
             teams: list[str] | None = None, name: str = "mcp-test") -> tuple[str, str]:
    """A new key the user makes in person: ``(key id, apk_... token)``; ``teams`` by
    name (none: all of the user's teams)."""
    from flask_appbuilder.security.sqla.models import User

    from app.extensions import db
    from app.security import api_keys
    from app.security.request import actor_for_user

    with app.app_context():
        person = actor_for_user(db.session, db.session.get(User, user_id))
        key, token = api_keys.create_key(db.session, person, api_keys.KeyIn(
            name=name, scopes=scopes, teams=teams or []))
        db.session.commit()
        key_id = key.id
        db.session.remove()
    return key_id, token


def revoke(app: Flask, key_id: str) -> None:
    """The key's user revokes it in person."""
    from flask_appbuilder.security.sqla.models import User

    from app.extensions import db
    from app.models import ApiKey
    from app.security import api_keys
    from app.security.request import actor_for_user

    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        assert key is not None
        person = actor_for_user(db.session, db.session.get(User, key.user_id))
        api_keys.revoke_key(db.session, person, key_id)
        db.session.commit()
        db.session.remove()


def set_role(app: Flask, user_id: int, role: str) -> None:
    from flask_appbuilder.security.sqla.models import User

    from app.extensions import db

    with app.app_context():
        user = db.session.get(User, user_id)
        user.roles = [app.extensions["appbuilder"].sm.find_role(role)]
        db.session.commit()
        db.session.remove()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(base: str, proc: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server process ended"
        try:
            with urllib.request.urlopen(base + "/health", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise AssertionError(f"{base} did not answer within {timeout}s")


def serve_up(processes: Callable[[str], Any], workers: int = 1) -> str:
    """`flask --app app up` (web, workers and scheduler) on a free port: its base URL."""
    port = free_port()
    proc = processes(f"up --port {port} --workers {workers}")
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, proc)
    return base


@asynccontextmanager
async def http_client(base: str, token: str) -> AsyncIterator[Any]:
    """The SDK's client on ``base``/mcp, with the key as Bearer token."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=30) as http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            yield client


class Transcript:
    """Tool calls and their answers, in order, as Markdown."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines += [text, ""]

    def call(self, tool: str, arguments: dict[str, Any], answer: Any) -> None:
        self.lines += [f"**→ `{tool}`**", "", "```json", _dump(arguments), "```", "",
                       "**←**", "", "```json", _dump(answer), "```", ""]

    def save(self) -> None:
        if os.environ.get("APG_SAVE_TRANSCRIPT") != "1":
            return
        TRANSCRIPT.write_text("\n".join([f"# {self.title}", "", *self.lines]).rstrip() + "\n")


def _dump(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) < 4000 else text[:4000] + "\n…"


async def tool(client: Any, transcript: Transcript | None, name: str,
               arguments: dict[str, Any]) -> Any:
    """Call a tool; its structured answer (an MCPError is raised and recorded)."""
    from mcp.shared.exceptions import MCPError

    try:
        result = await client.call_tool(name, arguments)
    except MCPError as exc:
        if transcript is not None:
            transcript.call(name, arguments, {"error": {"code": exc.code, "message": exc.message,
                                                        "data": exc.data}})
        raise
    assert not result.is_error, result
    if transcript is not None:
        transcript.call(name, arguments, result.structured_content)
    return result.structured_content
