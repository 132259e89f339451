"""The budget of an expression evaluation: a wall-clock limit and a size cap.

Every evaluation of user-written expressions (``with``, ``when``, ``for_each``, a
sub-workflow's params, and whatever evaluates expressions next: triggers, connectors)
runs inside ``limited(budget)``. The one mechanism, so every caller gets the same
limits and the same message.

Time: a deadline per thread (a worker, a web preview: any thread), checked by ``tick``
where an evaluation can go on for long: each iteration of a template loop (the
generated code iterates through ``ticking``), each call of the sandbox (a macro, a
method) and each filter. Nothing is checked, and nothing costs, outside an evaluation.
A single C call cannot be interrupted: the size checks (``check_size`` and the
sandbox's hooks in ``guards``) refuse the calls that would build a huge value before
they run, so no single step is long.

Size: strings and lists an expression builds, and its result, hold at most
``Budget.max_size`` characters or items (``MAX_SIZE``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_TIMEOUT", "MAX_SIZE", "Budget", "BudgetExceeded", "SizeExceeded",
           "check_size", "limited", "max_size", "tick", "ticking"]

DEFAULT_TIMEOUT = 2.0  # EXPRESSION_TIMEOUT
MAX_SIZE = 1_000_000  # characters of a string, items of a list


class BudgetExceeded(BaseException):
    """An evaluation went over its budget. A ``BaseException``, so that no ``except
    Exception`` inside the template machinery can swallow it and carry on."""


class SizeExceeded(BudgetExceeded):
    """A value an expression was about to build is over the size cap."""


@dataclass(frozen=True)
class Budget:
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = MAX_SIZE


class _State(threading.local):
    deadline: float | None = None
    fired: float | None = None  # the deadline already reported: raised once, not again
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = MAX_SIZE


_state = _State()


def tick() -> None:
    """Where an evaluation can go on for long (each iteration of a template loop, each
    call and filter of the sandbox): past the deadline, raise ``BudgetExceeded``, once
    per deadline, so the code that unwinds (and the caller's, inside a shared block)
    runs on."""
    state = _state
    deadline = state.deadline
    if deadline is not None and time.monotonic() > deadline and state.fired != deadline:
        state.fired = deadline
        raise BudgetExceeded(f"expression exceeded its {state.timeout:g} s budget")


def ticking(iterable: Iterable[Any]) -> Iterator[Any]:
    """``iterable``, with a ``tick`` before each item: the loop guard of templates."""
    for item in iterable:
        tick()
        yield item


@contextmanager
def limited(budget: Budget) -> Iterator[None]:
    """Evaluate inside ``budget``; past it, the next ``tick`` raises ``BudgetExceeded``.
    Nested, the nearer deadline and the smaller size win."""
    state = _state
    saved = (state.deadline, state.timeout, state.max_size)
    deadline = time.monotonic() + budget.timeout
    if state.deadline is None or deadline < state.deadline:
        state.deadline, state.timeout = deadline, budget.timeout
    state.max_size = min(state.max_size, budget.max_size) if saved[0] is not None \
        else budget.max_size
    try:
        yield
    finally:
        state.deadline, state.timeout, state.max_size = saved


def max_size() -> int:
    """The size cap of the evaluation under way (``MAX_SIZE`` outside one)."""
    return _state.max_size if _state.deadline is not None else MAX_SIZE


def check_size(size: int, what: str = "the result") -> None:
    """Refuse a value of ``size`` characters or items over the cap, before it is built."""
    limit = max_size()
    if size > limit:
        raise SizeExceeded(f"{what} would be longer than {limit:,} items")
