"""task logs: the lines an attempt's connector or python callable wrote

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 12:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_task_log',
        sa.Column('attempt_id', sa.String(length=36), nullable=False),
        sa.Column('lines', sa.JSON(), nullable=False),
        sa.Column('truncated', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['attempt_id'], ['apg_task_attempt.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('attempt_id'),
    )


def downgrade():
    op.drop_table('apg_task_log')
