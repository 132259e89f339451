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
from typing import Any

from sqlalchemy import Text, case, cast, func, select, type_coerce
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


def _limited(column: Any, max_value: int | None) -> list[ColumnElement[Any]]:
    """``column`` when its JSON text is at most ``max_value`` characters, else NULL; its
    size; and the start of its text when it was cut."""
    if max_value is None:
        return [column.label("value"), func.length(cast(column, Text)).label("size"),
                type_coerce(None, Text).label("preview")]
    size = func.length(cast(column, Text))
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


def read(session: DbSession, run_id: str, full: bool, max_value: int | None = None,
         items: Page = FIRST, attempts: Page = FIRST, task_id: str | None = None,
         elements: bool = True) -> list[TaskRead]:
    """The run's tasks (every kind, in position order), each with a page of its elements
    and attempts. ``full``: outputs (cut over ``max_value``), errors and prompts too (the
    API); else statuses and times only (live updates). ``task_id``: that task only (its
    rows of every kind). ``elements=False``: the run has no ``for_each`` task
    (``Plan.has_elements``), so its two element statements are not run."""
    where: list[Any] = [TaskRun.run_id == run_id]
    if task_id is not None:
        where.append(TaskRun.task_id == task_id)
    columns: list[Any] = [TaskRun.id, TaskRun.kind, TaskRun.task_id, TaskRun.status,
                          TaskRun.attempts, TaskRun.reason, TaskRun.started_at,
                          TaskRun.finished_at]
    if full:
        columns += [TaskRun.error, TaskRun.prompt, *_limited(TaskRun.output, max_value)]
    tasks = {r.id: TaskRead(r) for r in session.execute(
        select(*columns).where(*where).order_by(TaskRun.position))}
    if not tasks:
        return []
    of_run = select(TaskRun.id).where(*where).scalar_subquery()

    if elements:
        _elements(session, tasks, of_run, full, max_value, items)
    _attempts(session, tasks, of_run, full, attempts)
    return list(tasks.values())


def _elements(session: DbSession, tasks: dict[str, TaskRead], of_run: Any, full: bool,
              max_value: int | None, items: Page) -> None:
    """A page of each task's elements, by a window over them in index order, and their
    count per status."""
    item_columns: list[Any] = [TaskItem.task_run_id, TaskItem.index, TaskItem.status]
    if full:
        item_columns += [TaskItem.attempts, TaskItem.error,
                         *_limited(TaskItem.output, max_value)]
    numbered = select(*item_columns, func.row_number().over(
        partition_by=TaskItem.task_run_id, order_by=TaskItem.index).label("n")
    ).where(TaskItem.task_run_id.in_(of_run)).subquery()
    for r in session.execute(
            select(numbered).where(numbered.c.n > items.offset,
                                   numbered.c.n <= items.offset + items.limit)
            .order_by(numbered.c.task_run_id, numbered.c.index)):
        tasks[r.task_run_id].items.append(r)
    for task_run_id, status, number in session.execute(
            select(TaskItem.task_run_id, TaskItem.status, func.count())
            .where(TaskItem.task_run_id.in_(of_run))
            .group_by(TaskItem.task_run_id, TaskItem.status)):
        tasks[task_run_id].item_counts[status] = number


def _attempts(session: DbSession, tasks: dict[str, TaskRead], of_run: Any, full: bool,
              attempts: Page) -> None:
    """A page of each task's attempts in the order they were made, with its total."""
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
    for r in session.execute(
            select(ranked).where(ranked.c.n > attempts.offset,
                                 ranked.c.n <= attempts.offset + attempts.limit)
            .order_by(ranked.c.task_run_id, ranked.c.n)):
        read_ = tasks[r.task_run_id]
        read_.attempts.append(r)
        read_.attempts_total = r.total
    for read_ in tasks.values():
        if not read_.attempts:  # none in this page: the task's own count says how many
            read_.attempts_total = read_.row.attempts


def counts(reads: list[TaskRead]) -> dict[str, int]:
    """How many tasks (of the definition, not undo steps) are in each status."""
    out: dict[str, int] = defaultdict(int)
    for r in reads:
        if r.row.kind == "task":
            out[r.row.status] += 1
    return dict(out)
