"""run cost: what a run's attempts cost (llm tokens priced by LLM_PRICES), summed

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 13:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cost', sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.drop_column('cost')
