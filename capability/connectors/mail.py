"""``email`` (CONNECTORS.md): a message through an ``smtp`` connection: text and HTML,
attachments, STARTTLS or SSL, a login. The server's address is checked by the egress
policy and connected to as checked; TLS still verifies the certificate against the
host name."""

from __future__ import annotations

import base64
import binascii
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from capability.connectors.fields import PasswordSecret
from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)


class SmtpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = Field(default=False, description="TLS from the first byte (port 465)")
    username: str | None = Field(default=None, max_length=256)
    from_: str = Field(alias="from", min_length=3, max_length=320,
                       description="the sender address")
    verify_tls: bool = Field(default=True, description=(
        "check the server's certificate (turn off only for a test server)"))

    @model_validator(mode="after")
    def _one_tls(self) -> SmtpConfig:
        if self.ssl and self.starttls:
            raise ValueError("choose ssl (port 465) or starttls (port 587), not both")
        return self


class _Smtp:
    """An open, logged-in SMTP session to the checked address."""

    def __init__(self, connection: dict[str, Any], context: Context) -> None:
        host, port = str(connection["host"]), int(connection.get("port") or 587)
        address = context.endpoint(host, port)
        timeout = min(context.remaining(), 60.0)
        tls = ssl.create_default_context()
        if not connection.get("verify_tls", True):
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        if connection.get("ssl"):
            self.client: smtplib.SMTP = _SslTo(host, tls, address, port, timeout)
        else:
            self.client = smtplib.SMTP(address, port, timeout=timeout)
            if connection.get("starttls", True):
                # starttls checks the certificate against ``_host``, which connect() set to
                # the address: the name is what the certificate names.
                self.client._host = host  # type: ignore[attr-defined]
                self.client.starttls(context=tls)
        if connection.get("username"):
            self.client.login(str(connection["username"]), str(connection.get("password", "")))

    def __enter__(self) -> smtplib.SMTP:
        return self.client

    def __exit__(self, *exc: Any) -> None:
        try:
            self.client.quit()
        except smtplib.SMTPException:
            self.client.close()


class _SslTo(smtplib.SMTP_SSL):
    """SMTP over TLS to a checked address, the certificate checked against the name."""

    def __init__(self, name: str, tls: ssl.SSLContext, address: str, port: int,
                 timeout: float) -> None:
        self._name = name
        super().__init__(address, port, timeout=timeout, context=tls)

    def _get_socket(self, host: str, port: int, timeout: float) -> Any:
        import socket

        raw = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=self._name)


def _retriable(exc: Exception) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500  # 4xx: try again later
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    return isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError,
                            ConnectionError, TimeoutError))


class SmtpType(ConnectionType):
    type = "smtp"
    Config = SmtpConfig
    Secret = PasswordSecret
    description = "A mail server (SMTP): host, port, STARTTLS or SSL, login, sender."

    def test(self, context: Context) -> str:
        assert context.connection is not None
        try:
            with _Smtp(context.connection, context) as client:
                code, reply = client.noop()
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise ConnectorError(f"{type(exc).__name__}: {exc}",
                                 retriable=_retriable(exc)) from None
        return f"connected: {code} {reply.decode(errors='replace')}"


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="the file name")
    content_base64: str = Field(description="the content, base64")
    content_type: str = Field(default="application/octet-stream", max_length=127,
                              description="its MIME type")


Addresses = Templated[list[str]]


class EmailWith(With):
    """Sends an email through an smtp connection: text and/or HTML, cc, attachments
    (base64). Output: {message_id, accepted: [addresses]}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "an smtp connection of the run's team"))
    to: Addresses = Field(min_length=1, description="the recipients")
    cc: Addresses = Field(default_factory=list, description="copies")
    subject: str = Field(min_length=1, max_length=998, description="the subject")
    text: str | None = Field(default=None, description=(
        "the plain-text body; give text, html or both"))
    html: str | None = Field(default=None, description="the HTML body")
    attachments: Templated[list[Attachment]] = Field(default_factory=list, description="files")

    @model_validator(mode="after")
    def _a_body(self) -> EmailWith:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        return self


class EmailConnector(Connector):
    type = "email"
    With = EmailWith
    connection_types = ("smtp",)
    example = {"connection": "mail", "to": ["ops@example.com"],
               "subject": "Nightly load {{ run.id }}", "text": "Done."}

    def retriable(self, exc: Exception) -> bool:
        return _retriable(exc)

    def execute(self, context: Context) -> Any:
        with_: EmailWith = context.with_
        assert context.connection is not None
        sender = str(context.connection["from"])
        message = EmailMessage()
        message["From"], message["To"] = sender, ", ".join(with_.to)
        if with_.cc:
            message["Cc"] = ", ".join(with_.cc)
        message["Subject"] = with_.subject
        message["Message-ID"] = make_msgid(idstring=context.attempt_id.replace("-", ""))
        message.set_content(with_.text if with_.text is not None else "")
        if with_.html is not None:
            message.add_alternative(with_.html, subtype="html")
        for item in with_.attachments:
            try:
                data = base64.b64decode(item.content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ConnectorError(f"with.attachments: {item.name!r} is not base64") from None
            main, _, sub = item.content_type.partition("/")
            message.add_attachment(data, maintype=main, subtype=sub or "octet-stream",
                                   filename=item.name)
        recipients = [*with_.to, *with_.cc]
        try:
            with _Smtp(context.connection, context) as client:
                refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ConnectorError(f"every recipient was refused: {exc.recipients}",
                                 retriable=_retriable(exc)) from None
        except (smtplib.SMTPException, ssl.SSLError) as exc:
            raise ConnectorError(f"{type(exc).__name__}: {exc}",
                                 retriable=_retriable(exc)) from None
        accepted = [r for r in recipients if r not in refused]
        context.log("info", f"sent to {len(accepted)} of {len(recipients)} recipients")
        return {"message_id": message["Message-ID"], "accepted": accepted}
