"""A run's tasks read in bulk, for the API, the run page and live updates.

A constant number of statements whatever the size of the run: its task rows, a page of
each task's elements, the count of each task's elements per status, and a page of each
task's attempts (with how many there are). Before, a run's JSON read two statements per
task and one per element attempt (a 41-task run: 91 statements; a 5,000-element
``for_each``: thousands), and returned every element and attempt (1.76 MB).

Pages are per task: ``Page(offset, limit)`` in element index order and in the order the
attempts were made. Large values (outputs) are cut in SQL: a value whose JSON text is
longer than ``max_value`` characters never leaves the database; its size and the first
``PREVIEW`` characters come back instead (``Value``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Integer, Text, bindparam, case, cast, func, select, type_coerce
from sqlalchemy.sql import ColumnElement

from app.extensions import DbSession
from capability.models import TaskAttempt, TaskItem, TaskRun

# Elements and attempts of a task shown at once (the API's default page, the run page's
# first page and "load more" step, a live update's share).
PAGE = 100
# The largest page a reader may ask for.
MAX_PAGE = 1000
# Characters of a cut value's JSON text that come back (the page shows them).
PREVIEW = 1024


@dataclass(frozen=True)
class Page:
    offset: int = 0
    limit: int = PAGE


FIRST = Page()


@dataclass
class Value:
    """A value as read: whole (``value``), or cut (``size`` characters of JSON, of which
    ``preview`` is the start)."""

    value: Any = None
    size: int | None = None
    preview: str | None = None

    @property
    def cut(self) -> bool:
        return self.preview is not None


@dataclass
class TaskRead:
    row: Any  # the task's columns (``_task_columns``)
    items: list[Any] = field(default_factory=list)
    item_counts: dict[str, int] = field(default_factory=dict)
    attempts: list[Any] = field(default_factory=list)
    attempts_total: int = 0

    @property
    def items_total(self) -> int:
        return sum(self.item_counts.values())


def _limited(column: Any, cut: bool) -> list[ColumnElement[Any]]:
    """``column`` when its JSON text is at most ``max_value`` characters (a bound
    parameter), else NULL; its size; and the start of its text when it was cut."""
    if not cut:
        return [column.label("value"), func.length(cast(column, Text)).label("size"),
                type_coerce(None, Text).label("preview")]
    size = func.length(cast(column, Text))
    max_value = bindparam("max_value", type_=Integer)
    return [
        type_coerce(case((size <= max_value, column), else_=None), column.type).label("value"),
        size.label("size"),
        case((size > max_value, func.substr(cast(column, Text), 1, PREVIEW)),
             else_=None).label("preview"),
    ]


def value_of(row: Any) -> Value:
    if row.preview is not None:
        return Value(None, row.size, row.preview)
    return Value(row.value, row.size)


class _Statements(NamedTuple):
    tasks: Any
    items: Any
    item_counts: Any
    attempts: Any


@cache
def _statements(full: bool, cut: bool, one_task: bool) -> _Statements:
    """The four statements of a read, built once per shape: building them cost about as
    much Python as running them (a run's ``GET`` is a few milliseconds). Bound:
    ``run_id``, ``task_id``, ``max_value`` and the pages' bounds."""
    where: list[Any] = [TaskRun.run_id == bindparam("run_id")]
    if one_task:
        where.append(TaskRun.task_id == bindparam("task_id"))
    columns: list[Any] = [TaskRun.id, TaskRun.kind, TaskRun.task_id, TaskRun.status,
                          TaskRun.attempts, TaskRun.reason, TaskRun.started_at,
                          TaskRun.finished_at]
    if full:
        columns += [TaskRun.error, TaskRun.prompt, *_limited(TaskRun.output, cut)]
    tasks = select(*columns).where(*where).order_by(TaskRun.position)
    of_run = select(TaskRun.id).where(*where).scalar_subquery()

    # The elements: a page per task, by a window over the task's elements in index order.
    item_columns: list[Any] = [TaskItem.task_run_id, TaskItem.index, TaskItem.status]
    if full:
        item_columns += [TaskItem.attempts, TaskItem.error, *_limited(TaskItem.output, cut)]
    numbered = select(*item_columns, func.row_number().over(
        partition_by=TaskItem.task_run_id, order_by=TaskItem.index).label("n")
    ).where(TaskItem.task_run_id.in_(of_run)).subquery()
    items = (select(numbered).where(numbered.c.n > bindparam("items_after"),
                                    numbered.c.n <= bindparam("items_upto"))
             .order_by(numbered.c.task_run_id, numbered.c.index))
    item_counts = (select(TaskItem.task_run_id, TaskItem.status, func.count())
                   .where(TaskItem.task_run_id.in_(of_run))
                   .group_by(TaskItem.task_run_id, TaskItem.status))

    # The attempts: a page per task in the order they were made, with the task's total.
    attempt_columns: list[Any] = [
        TaskAttempt.task_run_id, TaskAttempt.number, TaskAttempt.status, TaskAttempt.worker,
        TaskAttempt.started_at, TaskAttempt.finished_at, TaskItem.index.label("item")]
    if full:
        attempt_columns += [TaskAttempt.id, TaskAttempt.error]
    order = (TaskAttempt.created_at, TaskAttempt.number, TaskAttempt.id)
    ranked = select(
        *attempt_columns,
        func.row_number().over(partition_by=TaskAttempt.task_run_id, order_by=order).label("n"),
        func.count().over(partition_by=TaskAttempt.task_run_id).label("total"),
    ).outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id).where(
        TaskAttempt.task_run_id.in_(of_run)).subquery()
    attempts = (select(ranked).where(ranked.c.n > bindparam("attempts_after"),
                                     ranked.c.n <= bindparam("attempts_upto"))
                .order_by(ranked.c.task_run_id, ranked.c.n))
    return _Statements(tasks, items, item_counts, attempts)


def read(session: DbSession, run_id: str, full: bool, max_value: int | None = None,
         items: Page = FIRST, attempts: Page = FIRST, task_id: str | None = None,
         elements: bool = True) -> list[TaskRead]:
    """The run's tasks (every kind, in position order), each with a page of its elements
    and attempts. ``full``: outputs (cut over ``max_value``), errors and prompts too (the
    API); else statuses and times only (live updates). ``task_id``: that task only (its
    rows of every kind). ``elements=False``: the run has no ``for_each`` task
    (``Plan.has_elements``), so its two element statements are not run."""
    built = _statements(full, max_value is not None, task_id is not None)
    params = {"run_id": run_id, "task_id": task_id, "max_value": max_value,
              "items_after": items.offset, "items_upto": items.offset + items.limit,
              "attempts_after": attempts.offset,
              "attempts_upto": attempts.offset + attempts.limit}
    if session.new or session.dirty or session.deleted:
        session.flush()  # what autoflush would do before an ORM statement
    # On the connection: an ORM-enabled execution costs more Python than these reads.
    conn = session.connection()
    tasks = {r.id: TaskRead(r) for r in conn.execute(built.tasks, params)}
    if not tasks:
        return []
    if elements:
        for r in conn.execute(built.items, params):
            tasks[r.task_run_id].items.append(r)
        for task_run_id, status, number in conn.execute(built.item_counts, params):
            tasks[task_run_id].item_counts[status] = number
    for r in conn.execute(built.attempts, params):
        read_ = tasks[r.task_run_id]
        read_.attempts.append(r)
        read_.attempts_total = r.total
    for read_ in tasks.values():
        if not read_.attempts:  # none in this page: the task's own count says how many
            read_.attempts_total = read_.row.attempts
    return list(tasks.values())


def counts(reads: list[TaskRead]) -> dict[str, int]:
    """How many tasks (of the definition, not undo steps) are in each status."""
    out: dict[str, int] = defaultdict(int)
    for r in reads:
        if r.row.kind == "task":
            out[r.row.status] += 1
    return dict(out)
