"""event triggers (run finished, named events) and the runs that ended for them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_event_trigger',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('workflow_id', sa.String(length=36), nullable=False),
        sa.Column('on_workflow_id', sa.String(length=36), nullable=True),
        sa.Column('on_statuses', sa.JSON(), nullable=False),
        sa.Column('on_event', sa.String(length=128), nullable=True),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('last_refusal', sa.Text(), nullable=True),
        sa.Column('last_refusal_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.String(length=256), nullable=False),
        sa.Column('updated_by', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['apg_team.id'], ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['workflow_id'], ['apg_workflow.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['on_workflow_id'], ['apg_workflow.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('apg_event_trigger', schema=None) as batch_op:
        batch_op.create_index('ix_apg_event_trigger_upstream', ['on_workflow_id'], unique=False)
        batch_op.create_index('ix_apg_event_trigger_event', ['team_id', 'on_event'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_apg_event_trigger_team_id'), ['team_id'],
                              unique=False)
    op.create_table(
        'apg_run_event',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade():
    op.drop_table('apg_run_event')
    with op.batch_alter_table('apg_event_trigger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apg_event_trigger_team_id'))
        batch_op.drop_index('ix_apg_event_trigger_event')
        batch_op.drop_index('ix_apg_event_trigger_upstream')
    op.drop_table('apg_event_trigger')
