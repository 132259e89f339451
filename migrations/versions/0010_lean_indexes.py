"""drop three indexes a unique constraint already provides

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:50:00

``ix_apg_task_run_run_id``, ``ix_apg_task_item_task_run_id`` and
``ix_apg_task_attempt_task_run_id`` index the leading column of a unique constraint of
their table (``uq_apg_task_run``, ``uq_apg_task_item``, ``uq_apg_task_attempt``), which
answers the same lookups. Each cost every insert of its table an index update: a start
writes a row per task, a for_each a row per element (issue 11, item 19).
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

DROPPED = (('apg_task_run', 'ix_apg_task_run_run_id', 'run_id'),
           ('apg_task_item', 'ix_apg_task_item_task_run_id', 'task_run_id'),
           ('apg_task_attempt', 'ix_apg_task_attempt_task_run_id', 'task_run_id'))


def upgrade():
    for table, index, _ in DROPPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)


def downgrade():
    for table, index, column in DROPPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(index, [column], unique=False)
