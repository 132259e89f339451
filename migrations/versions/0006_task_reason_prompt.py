"""why a task did not run, and what a waiting task asks

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 12:00:00

``apg_task_run.reason``: why a task ended skipped or upstream_failed (`when` was false,
an upstream was skipped or failed, its trigger rule), shown by the API and the run page.
``apg_task_run.prompt``: an approval's message and approvers, rendered when it began to
wait.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('apg_task_run') as batch:
        batch.add_column(sa.Column('reason', sa.Text(), nullable=True))
        batch.add_column(sa.Column('prompt', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('apg_task_run') as batch:
        batch.drop_column('prompt')
        batch.drop_column('reason')
