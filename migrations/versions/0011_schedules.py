"""schedules and their tick ledger; runs record their trigger's source

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 06:00:00

The ledger's primary key (schedule, instant) is what makes a tick decided exactly once
however many schedulers run (capability.triggers.ticker).
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_schedule',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('workflow_id', sa.String(length=36), nullable=False),
        sa.Column('cron', sa.String(length=255), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('paused', sa.Boolean(), nullable=False),
        sa.Column('start_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('end_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('catchup', sa.String(length=16), nullable=False),
        sa.Column('catchup_window', sa.String(length=16), nullable=False),
        sa.Column('overlap', sa.String(length=16), nullable=False),
        sa.Column('jitter', sa.String(length=16), nullable=False),
        sa.Column('dst_missing', sa.String(length=16), nullable=False),
        sa.Column('dst_repeated', sa.String(length=16), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('disabled_reason', sa.Text(), nullable=True),
        sa.Column('decided_until', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_due', sa.DateTime(timezone=True), nullable=True),
        sa.Column('buffered_for', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.String(length=256), nullable=False),
        sa.Column('updated_by', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['apg_team.id'], ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['workflow_id'], ['apg_workflow.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('apg_schedule', schema=None) as batch_op:
        batch_op.create_index('ix_apg_schedule_due', ['next_due'], unique=False)
        batch_op.create_index('ix_apg_schedule_workflow', ['workflow_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_apg_schedule_team_id'), ['team_id'], unique=False)
    op.create_table(
        'apg_schedule_tick',
        sa.Column('schedule_id', sa.String(length=36), nullable=False),
        sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['schedule_id'], ['apg_schedule.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('schedule_id', 'scheduled_for'),
    )
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trigger_source_type', sa.String(length=16),
                                      nullable=True))
        batch_op.add_column(sa.Column('trigger_source_id', sa.String(length=36),
                                      nullable=True))
        batch_op.add_column(sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_apg_run_trigger_source', ['trigger_source_id', 'status'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.drop_index('ix_apg_run_trigger_source')
        batch_op.drop_column('scheduled_for')
        batch_op.drop_column('trigger_source_id')
        batch_op.drop_column('trigger_source_type')
    op.drop_table('apg_schedule_tick')
    with op.batch_alter_table('apg_schedule', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apg_schedule_team_id'))
        batch_op.drop_index('ix_apg_schedule_workflow')
        batch_op.drop_index('ix_apg_schedule_due')
    op.drop_table('apg_schedule')
