"""Durations as the definition language writes them: ``30s``, ``5m``, ``1h`` or seconds."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Kept as a plain string: it is also published in the JSON Schema.
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")

_HINT = "use a number of seconds or a value like 250ms, 30s, 5m, 1h"


def parse_duration(value: Any) -> float:
    """Seconds (never negative) for ``30s``, ``5m``, ``1h``, ``250ms``, ``2d``, ``1.5``, ``"90"``.

    Raises ``ValueError`` with a message a user can act on.
    """
    # bool is an int subclass: `timeout: true` is a mistake, not one second.
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: {_HINT}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"invalid duration {value!r}: {_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid duration {value!r}: {_HINT}")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 90 -> '90s', 300 -> '5m', 0.25 -> '250ms'."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    millis = seconds * 1000
    if millis == int(millis):
        return f"{int(millis)}ms"
    return f"{seconds}s"
