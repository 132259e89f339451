"""``s3`` (CONNECTORS.md): get, put, list and delete objects through an ``s3`` connection
(AWS, or any S3-compatible endpoint: MinIO, Ceph, moto). boto3 is given the address
the egress policy checked (a custom endpoint) or AWS's own endpoint for the region;
large objects go in parts (boto3's managed transfer), and a transfer stops at the
task's deadline or when it is cancelled."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from capability.connectors.sdk import (
    ConnectionType,
    Connector,
    ConnectorError,
    Context,
    Templated,
    With,
)

MAX_GET_BYTES = 8 * 1024 * 1024  # a larger object is not read into an output


class S3Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(default=None, max_length=2048, description=(
        "an S3-compatible endpoint; none for AWS"))
    region: str = Field(default="us-east-1", max_length=64)
    access_key_id: str = Field(min_length=1, max_length=256)

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL")
        return value


class S3Secret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret_access_key: str = Field(min_length=1, max_length=1024)


def _client(connection: dict[str, Any], context: Context) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = connection.get("endpoint_url")
    region = str(connection.get("region") or "us-east-1")
    if endpoint:
        parts = urlsplit(str(endpoint))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = context.endpoint(str(parts.hostname), port)
        if parts.scheme == "http":  # TLS would check the name: keep it for https
            endpoint = urlunsplit(("http", f"{address}:{port}", parts.path, "", ""))
    else:
        context.endpoint(f"s3.{region}.amazonaws.com", 443)
    timeout = min(context.remaining(), 60.0)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region,
        aws_access_key_id=str(connection["access_key_id"]),
        aws_secret_access_key=str(connection.get("secret_access_key") or ""),
        config=Config(connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def _classify(exc: Exception) -> ConnectorError:
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return ConnectorError(f"s3: {error.get('Code')}: {error.get('Message')}",
                              retriable=status == 429 or status >= 500)
    if isinstance(exc, EndpointConnectionError | ReadTimeoutError | ConnectionError):
        return ConnectorError(f"s3: {type(exc).__name__}: {exc}", retriable=True)
    return ConnectorError(f"s3: {type(exc).__name__}: {exc}")


class S3Type(ConnectionType):
    type = "s3"
    Config = S3Config
    Secret = S3Secret
    description = "S3 or an S3-compatible store: endpoint, region, access key."

    def test(self, context: Context) -> str:
        assert context.connection is not None
        try:
            found = _client(context.connection, context).list_buckets().get("Buckets", [])
        except ConnectorError:
            raise
        except Exception as exc:
            raise _classify(exc) from None
        return f"connected: {len(found)} bucket(s) visible"


class S3With(With):
    """get, put, list or delete objects in a bucket through an s3 connection. Output: get
    {body (text) or body_base64, size, etag, content_type}; put {etag, size}; list
    {keys}; delete {deleted}."""

    connection: str = Field(min_length=1, max_length=63, description=(
        "an s3 connection of the run's team"))
    operation: Literal["get", "put", "list", "delete"] = Field(description="what to do")
    bucket: str = Field(min_length=3, max_length=63, description="the bucket")
    key: str | None = Field(default=None, min_length=1, max_length=1024, description=(
        "the object's key (every operation but list)"))
    prefix: str = Field(default="", max_length=1024, description=(
        "list: only keys starting with it"))
    body: Any = Field(default=None, description="put: text, or JSON for anything else")
    body_base64: str | None = Field(default=None, description="put: bytes, base64")
    file: str | None = Field(default=None, max_length=1024, description=(
        "put: the object's content from this file; get: the object written to it (a path "
        "under CONNECTION_FILES_DIR; for objects too large for an output)"))
    content_type: str | None = Field(default=None, max_length=255, description=(
        "put: its MIME type"))
    max_keys: Templated[int] = Field(default=1000, ge=1, le=10_000, description=(
        "list: at most this many keys"))

    @model_validator(mode="after")
    def _needs(self) -> S3With:
        if self.operation != "list" and not self.key:
            raise ValueError(f"{self.operation} needs key")
        given = [f for f in ("body", "body_base64", "file") if getattr(self, f) is not None]
        if self.operation == "put" and len(given) != 1:
            raise ValueError("put needs body, body_base64 or file (one of them)")
        return self


class _Stop(Exception):
    """Raised from a transfer's progress callback: the deadline passed or the attempt
    was cancelled."""


def _watch(context: Context) -> Any:
    import time

    def check(_bytes: int) -> None:
        if time.monotonic() > context.deadline or context.cancelled():
            raise _Stop()
    return check


class S3Connector(Connector):
    type = "s3"
    With = S3With
    connection_types = ("s3",)
    example = {"connection": "lake", "operation": "put", "bucket": "reports",
               "key": "daily/{{ params.day }}.json", "body": "{{ tasks.build.output }}"}

    def execute(self, context: Context) -> Any:
        with_: S3With = context.with_
        assert context.connection is not None
        client = _client(context.connection, context)
        try:
            return self._do(client, with_, context)
        except (ConnectorError, _Stop):
            raise
        except Exception as exc:
            if isinstance(exc.__context__, _Stop):
                raise _stopped(context) from None
            raise _classify(exc) from None

    def _do(self, client: Any, with_: S3With, context: Context) -> Any:
        import json

        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=8 * 1024 * 1024)
        if with_.operation == "list":
            found = client.list_objects_v2(Bucket=with_.bucket, Prefix=with_.prefix,
                                           MaxKeys=with_.max_keys)
            return {"keys": [item["Key"] for item in found.get("Contents", [])],
                    "truncated": bool(found.get("IsTruncated"))}
        if with_.operation == "delete":
            client.delete_object(Bucket=with_.bucket, Key=with_.key)
            return {"deleted": True}
        if with_.operation == "put":
            if with_.file is not None:
                source = context.file(with_.file)
                if not source.is_file():
                    raise ConnectorError(f"with.file: no file at {with_.file!r}")
                extra = {"ContentType": with_.content_type} if with_.content_type else None
                try:
                    client.upload_file(str(source), with_.bucket, with_.key, ExtraArgs=extra,
                                       Config=transfer, Callback=_watch(context))
                except _Stop:
                    raise _stopped(context) from None
                head = client.head_object(Bucket=with_.bucket, Key=with_.key)
                return {"etag": head["ETag"].strip('"'), "size": int(head["ContentLength"])}
            if with_.body_base64 is not None:
                try:
                    data = base64.b64decode(with_.body_base64, validate=True)
                except (binascii.Error, ValueError):
                    raise ConnectorError("with.body_base64: not base64") from None
            elif isinstance(with_.body, str):
                data = with_.body.encode()
            else:
                data = json.dumps(with_.body).encode()
            extra = {"ContentType": with_.content_type} if with_.content_type else None
            try:
                client.upload_fileobj(io.BytesIO(data), with_.bucket, with_.key,
                                      ExtraArgs=extra, Config=transfer,
                                      Callback=_watch(context))
            except _Stop:
                raise _stopped(context) from None
            head = client.head_object(Bucket=with_.bucket, Key=with_.key)
            return {"etag": head["ETag"].strip('"'), "size": len(data)}
        head = client.head_object(Bucket=with_.bucket, Key=with_.key)
        size = int(head["ContentLength"])
        if with_.file is not None:
            target = context.file(with_.file)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(with_.bucket, with_.key, str(target), Config=transfer,
                                     Callback=_watch(context))
            except _Stop:
                raise _stopped(context) from None
            return {"file": with_.file, "size": size, "etag": head["ETag"].strip('"'),
                    "content_type": head.get("ContentType")}
        if size > MAX_GET_BYTES:
            raise ConnectorError(f"s3 get: {with_.key!r} is {size} bytes, over the "
                                 f"{MAX_GET_BYTES} a task output may hold; read a part, "
                                 "or hand the key on instead")
        sink = io.BytesIO()
        try:
            client.download_fileobj(with_.bucket, with_.key, sink, Config=transfer,
                                    Callback=_watch(context))
        except _Stop:
            raise _stopped(context) from None
        data = sink.getvalue()
        out: dict[str, Any] = {"size": size, "etag": head["ETag"].strip('"'),
                               "content_type": head.get("ContentType")}
        try:
            out["body"] = data.decode("utf-8")
        except UnicodeDecodeError:
            out["body_base64"] = base64.b64encode(data).decode()
        return out


def _stopped(context: Context) -> ConnectorError:
    if context.cancelled():
        return ConnectorError("s3 transfer stopped: the attempt was cancelled")
    return ConnectorError("s3 transfer stopped: the task's timeout passed", retriable=True)
