"""Password complexity, used by FAB's forms, FAB's user API and ``ensure_admin``."""

from __future__ import annotations

import re
import secrets
import string

from flask_appbuilder.exceptions import PasswordComplexityValidationError

MIN_LENGTH = 10


def problems(password: str, min_length: int = MIN_LENGTH) -> list[str]:
    found = []
    if len(password or "") < min_length:
        found.append(f"at least {min_length} characters")
    if not re.search(r"[a-z]", password or ""):
        found.append("a lower-case letter")
    if not re.search(r"[A-Z]", password or ""):
        found.append("an upper-case letter")
    if not re.search(r"[0-9]", password or ""):
        found.append("a digit")
    if not re.search(r"[^A-Za-z0-9]", password or ""):
        found.append("a symbol")
    return found


def validate(password: str) -> None:
    missing = problems(password)
    if missing:
        raise PasswordComplexityValidationError("Password needs " + ", ".join(missing) + ".")


def generate(length: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits + "-_!@#%"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if not problems(candidate):
            return candidate
