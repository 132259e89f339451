"""Errors a service raises; API handlers and views map them to status codes."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "DATA_ERROR_MESSAGE", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge", "ServiceError",
    "TooManyRequests", "ValidationFailed", "parse", "printable",
]

# The answer (422) to a value the database refused that no check caught: never its SQL.
DATA_ERROR_MESSAGE = "A value is out of range or malformed for the database"


def printable(text: str) -> str:
    """``text`` with its NUL characters spelled out: safe to store (PostgreSQL refuses
    NUL in text), log or echo."""
    return text.replace("\x00", "\\u0000")


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        details = "; ".join(f"{e['path']}: {e['message']}" for e in self.errors)
        return f"{self.message}: {details}"

    def headers(self) -> dict[str, str]:
        """Response headers that go with the error (none but for a few statuses)."""
        return {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class NotFound(ServiceError):
    """The row does not exist or lies outside the actor's scope (the same to callers)."""

    status = 404


class ValidationFailed(ServiceError):
    status = 422


class Conflict(ServiceError):
    status = 409


class PayloadTooLarge(ServiceError):
    status = 413


class Forbidden(ServiceError):
    status = 403


class TooManyRequests(ServiceError):
    """A quota refused the request: try again in ``retry_after`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def error_path(loc: tuple[Any, ...]) -> str:
    """('tasks', 2, 'depends_on', 0) -> 'tasks[2].depends_on[0]'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "$"


def pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "field required"
        out.append({"path": error_path(tuple(err["loc"])), "message": message})
    return out


def parse(model: type[M], payload: Any) -> M:
    if not isinstance(payload, dict):
        raise ValidationFailed(
            "Request body must be a JSON object", [{"path": "$", "message": "expected an object"}]
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailed("Invalid request", pydantic_errors(exc)) from exc
