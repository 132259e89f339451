"""The cap on a stored output (``TASK_OUTPUT_MAX_BYTES``, 1 MiB by default).

An attempt's output is stored whole and read whole by everyone who views the run, so
one over the cap fails the attempt, not retried (the same work would give the same
output), with its size in the message: nothing is silently truncated, and nothing of
it is stored. The size is that of the output's JSON, as stored, in UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

from capability.engine.state import Outcome

MB = 1024 * 1024


def size_of(output: Any) -> int:
    """Bytes of ``output`` as JSON."""
    if output is None:
        return 0
    return len(json.dumps(output, default=str, ensure_ascii=False).encode())


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def capped(outcome: Outcome, limit: int) -> Outcome:
    """``outcome``, or a failure when its output is over ``limit`` bytes."""
    if not outcome.ok or outcome.output is None or limit <= 0:
        return outcome
    size = size_of(outcome.output)
    if size <= limit:
        return outcome
    return Outcome.failure(
        f"output is {_mb(size)}, over TASK_OUTPUT_MAX_BYTES ({_mb(limit)})", retriable=False)
