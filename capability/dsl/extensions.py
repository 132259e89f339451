"""Task types that join the registry when it is first used (connectors): a worker-role
process that never validates a definition nor runs a task (a scheduler) never loads
them, nor the registry, nor the engine's executors.

``on_registry(callback)`` keeps the callback until the registry (``dsl.types``) or the
engine's executors (``engine.executors``) are imported, each of which calls
``run_pending()`` once it is ready; a callback given after that runs at once. This
module imports nothing: registering a callback costs nothing."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

_pending: list[Callable[[], None]] = []
_lock = threading.RLock()
_READY = ("capability.dsl.types", "capability.engine.executors")


def on_registry(callback: Callable[[], None]) -> None:
    with _lock:
        _pending.append(callback)
    if any(name in sys.modules for name in _READY):
        run_pending()


def run_pending() -> None:
    """Run (once) the callbacks given so far; not while the executors are half imported
    (they import the registry first, and run the callbacks at their end)."""
    executors = sys.modules.get("capability.engine.executors")
    if executors is not None and not hasattr(executors, "register_task_type"):
        return
    with _lock:
        todo = list(_pending)
        _pending.clear()
        for callback in todo:
            callback()
