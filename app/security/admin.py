"""The first Admin: from ADMIN_USERNAME / ADMIN_PASSWORD, else a generated password."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from app.audit.context import acting_as
from app.security import passwords
from app.security.actor import SYSTEM
from app.security.roles import ADMIN


@dataclass(frozen=True)
class AdminResult:
    username: str
    created: bool
    generated_password: str | None = None


def ensure_admin(app: Flask) -> AdminResult:
    sm = app.extensions["appbuilder"].sm
    username = app.config.get("ADMIN_USERNAME") or "admin"
    existing = sm.find_user(username=username)
    if existing is not None:
        return AdminResult(username, created=False)
    supplied = app.config.get("ADMIN_PASSWORD") or ""
    if supplied:
        missing = passwords.problems(supplied)
        if missing:
            raise ValueError("ADMIN_PASSWORD needs " + ", ".join(missing))
    password = supplied or passwords.generate()
    with acting_as(SYSTEM):
        user = sm.add_user(
            username=username,
            first_name="Admin",
            last_name="User",
            email=app.config.get("ADMIN_EMAIL") or f"{username}@example.com",
            role=sm.find_role(ADMIN),
            password=password,
        )
    if not user:
        raise RuntimeError(f"could not create the admin user {username!r}")
    return AdminResult(username, created=True, generated_password=None if supplied else password)
