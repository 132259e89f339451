"""backfills of schedules

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 06:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_backfill',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('schedule_id', sa.String(length=36), nullable=False),
        sa.Column('workflow_id', sa.String(length=36), nullable=False),
        sa.Column('start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('overlap', sa.String(length=16), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('ticks', sa.JSON(), nullable=False),
        sa.Column('next_index', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_by', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['schedule_id'], ['apg_schedule.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['team_id'], ['apg_team.id'], ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('apg_backfill', schema=None) as batch_op:
        batch_op.create_index('ix_apg_backfill_status', ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_apg_backfill_team_id'), ['team_id'], unique=False)


def downgrade():
    with op.batch_alter_table('apg_backfill', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apg_backfill_team_id'))
        batch_op.drop_index('ix_apg_backfill_status')
    op.drop_table('apg_backfill')
