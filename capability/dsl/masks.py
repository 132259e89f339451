"""Masking secrets in what the engine stores and shows: every secret a task could read
is replaced by ``***`` in its output, its error, its for_each elements, a child run's
params, as written and in its common transforms.

Masked forms of a secret of at least ``MIN_TRANSFORMED`` characters: the value in any
letter case, reversed (any case), base64 and base64url (with and without padding, and
inside a longer base64 text, as in an HTTP Basic ``Authorization`` header), hex (any
case) and URL-encoded (``%20`` and ``+`` for spaces). A shorter secret is masked only
as written: its transforms would match ordinary text everywhere.

This stops accidents (a server that echoes a header, a log line, an encoded token in a
URL), not an Author: whoever can use a secret in a task can also send it elsewhere or
write it in a form no list of transforms covers (a slice, every other character, any
encoding of their own). That is why secrets belong to a team, and only its members
can write the workflows that read them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_TRANSFORMED", "mask_secrets", "mask_text", "transforms"]

MASK = "***"
MIN_TRANSFORMED = 4  # shorter secrets are masked as written only
_MIN_FRAGMENT = 6  # the shortest base64 run taken from the middle of a longer text


def _ordered(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if isinstance(v, str) and v}))


def _base64_runs(raw: bytes) -> set[str]:
    """The base64 of ``raw`` on its own, with and without padding, in both alphabets,
    and the characters that encode it whatever precedes it in a longer text (one run per
    offset of ``raw`` in its groups of three bytes)."""
    runs: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        runs.update((whole, whole.rstrip("=")))
        for offset in (1, 2):
            text = encode(b"\0" * offset + raw).decode()
            # The first group mixes the bytes before; the last one, when partial, the
            # bytes after: the characters between depend on the secret alone.
            end = 4 * ((offset + len(raw)) // 3)
            fragment = text[4:end]
            if len(fragment) >= _MIN_FRAGMENT:
                runs.add(fragment)
        head = whole[: 4 * (len(raw) // 3)]  # followed by more bytes: its full groups
        if len(head) >= _MIN_FRAGMENT:
            runs.add(head)
    return runs


def transforms(secret: str) -> tuple[set[str], set[str]]:
    """The forms of ``secret`` to mask: ``(exact, any_case)``."""
    if len(secret) < MIN_TRANSFORMED:
        return {secret}, set()
    raw = secret.encode()
    exact = _base64_runs(raw)
    exact |= {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    any_case = {secret, secret[::-1], raw.hex()}
    return exact - {secret}, any_case


@lru_cache(maxsize=256)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    exact: set[str] = set()
    any_case: set[str] = set()
    for secret in secrets:
        more_exact, more_any = transforms(secret)
        exact |= more_exact
        any_case |= more_any
    # Longest first, so that a form that contains another is masked whole.
    forms = sorted([(f, False) for f in exact] + [(f, True) for f in any_case],
                   key=lambda item: len(item[0]), reverse=True)
    return re.compile("|".join(
        f"(?i:{re.escape(form)})" if insensitive else re.escape(form)
        for form, insensitive in forms))


def mask_text(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every form of every non-empty secret replaced by ``***``."""
    secrets = _ordered(secret_values)
    if not secrets:
        return text
    return _pattern(secrets).sub(MASK, text)


def mask_secrets(value: Any, secret_values: Iterable[str]) -> Any:
    """A copy of a nested structure with every secret masked in strings and dict keys."""
    secrets = _ordered(secret_values)
    if not secrets:
        return value
    return _mask(value, _pattern(secrets))


def _mask(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if isinstance(value, Mapping):
        return {_mask(k, pattern): _mask(v, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(item, pattern) for item in value]
    return value
