"""``email`` against real SMTP servers started here (aiosmtpd): STARTTLS with a login,
implicit TLS (SSL), text + HTML + attachments as the receiver parses them; a refused
login fails without a retry and never shows the password."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from flask import Flask
from flask.testing import FlaskClient

from tests.support.runs import run_to_end
from tests.support.tls import tls_files

PASSWORD = "smtp-SECRET-7c1e"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 Message accepted"


def _login(server: Any, session: Any, envelope: Any, mechanism: str,
           auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"etl"
          and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    _ca, cert, key = tls_files(tmp_path_factory.mktemp("tls"), "mail.example")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture()
def starttls_server(tls: ssl.SSLContext) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), _free_port()
    server = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=tls,
                        require_starttls=True, authenticator=_login, auth_required=True)
    server.start()
    yield inbox, port
    server.stop()


@pytest.fixture()
def ssl_server(tls: ssl.SSLContext) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), _free_port()
    # No login here: aiosmtpd offers AUTH only after STARTTLS, not on implicit TLS.
    server = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=tls)
    server.start()
    yield inbox, port
    server.stop()


def _smtp(client: FlaskClient, op: dict[str, Any], name: str, port: int, *,
          ssl_mode: bool = False, password: str = PASSWORD) -> None:
    login = {} if ssl_mode else {"username": "etl"}
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": name, "type": "smtp",
        "config": {"host": "127.0.0.1", "port": port, "starttls": not ssl_mode,
                   "ssl": ssl_mode, "from": "apg@example.com", "verify_tls": False, **login},
        "secret": {"password": password}})
    assert r.status_code == 201, r.get_json()


def test_starttls_login_html_text_and_attachments(app: Flask, client: FlaskClient,
                                                  op: dict[str, Any],
                                                  starttls_server: tuple[Inbox, int]) -> None:
    inbox, port = starttls_server
    _smtp(client, op, "mail", port)
    made = client.get("/api/v1/connections/", headers=op["h"]).get_json()["result"][0]
    assert made["config"]["from"] == "apg@example.com"
    tested = client.post(f"/api/v1/connections/{made['id']}/test", headers=op["h"]).get_json()
    assert tested["ok"] is True, tested
    csv = b"id,total\n1,30\n"
    run = run_to_end(app, client, op, [{"id": "send", "type": "email", "with": {
        "connection": "mail", "to": ["ops@example.com"], "cc": ["lead@example.com"],
        "subject": "Nightly load", "text": "Done: 1 row.", "html": "<p>Done: <b>1</b> row.</p>",
        "attachments": [{"name": "totals.csv", "content_type": "text/csv",
                         "content_base64": base64.b64encode(csv).decode()}]}}])
    assert run["status"] == "succeeded", run["by_task"]["send"]
    output = run["by_task"]["send"]["output"]
    assert output["accepted"] == ["ops@example.com", "lead@example.com"]
    [(recipients, message)] = inbox.messages
    assert recipients == ["ops@example.com", "lead@example.com"]
    assert message["Subject"] == "Nightly load" and message["Message-ID"] == output["message_id"]
    assert message.get_body(preferencelist=("plain",)).get_content().strip() == "Done: 1 row."
    assert "<b>1</b>" in message.get_body(preferencelist=("html",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "totals.csv"
    assert attachment.get_content().encode() == csv


def test_implicit_tls(app: Flask, client: FlaskClient, op: dict[str, Any],
                      ssl_server: tuple[Inbox, int]) -> None:
    inbox, port = ssl_server
    _smtp(client, op, "mail", port, ssl_mode=True)
    run = run_to_end(app, client, op, [{"id": "send", "type": "email", "with": {
        "connection": "mail", "to": ["a@example.com"], "subject": "s", "text": "t"}}])
    assert run["status"] == "succeeded", run["by_task"]["send"]
    assert len(inbox.messages) == 1


def test_a_refused_login_is_not_retried(app: Flask, client: FlaskClient, op: dict[str, Any],
                                        starttls_server: tuple[Inbox, int],
                                        tmp_path: Path) -> None:
    inbox, port = starttls_server
    _smtp(client, op, "mail", port, password="wrong-SECRET-pw")
    run = run_to_end(app, client, op, [{"id": "send", "type": "email",
                                        "retry": {"max_attempts": 3, "delay": "50ms"},
                                        "with": {"connection": "mail", "to": ["a@example.com"],
                                                 "subject": "s", "text": "t"}}])
    task = run["by_task"]["send"]
    assert task["status"] == "failed" and task["attempts"] == 1
    assert "535" in task["error"] and "wrong-SECRET-pw" not in task["error"]
    assert inbox.messages == []
