"""Which attempt a live worker runs must be stopped, as the database says."""

from __future__ import annotations

import pytest

from capability.engine.stops import must_stop


@pytest.mark.parametrize(("status", "counts", "run", "task", "stop"), [
    ("cancelled", True, "cancelled", "cancelled", True),  # a cancel whose stop was lost
    ("lost", False, "running", "retrying", True),  # its retry may run elsewhere
    ("running", False, "running", "running", True),  # superseded by a manual retry
    ("running", True, "cancelled", "running", True),
    ("running", True, "running", "cancelled", True),
    ("running", True, "running", "running", False),  # the attempt that counts
    ("running", True, "paused", "running", False),  # a pause lets it finish
    ("queued", True, "running", "running", False),  # being begun
    ("scheduled", True, "running", "running", False),
    ("succeeded", True, "running", "succeeded", False),  # being recorded by its worker
    ("failed", True, "failed", "failed", False),
])
def test_what_must_stop(status: str, counts: bool, run: str, task: str, stop: bool) -> None:
    assert must_stop(status, counts, run, task) is stop
