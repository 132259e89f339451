"""webhooks, their delivery log and the delivery ids they accepted; runs record theirs

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 06:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_webhook',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('workflow_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('scheme', sa.String(length=32), nullable=False),
        sa.Column('secret_name', sa.String(length=63), nullable=True),
        sa.Column('tolerance', sa.String(length=16), nullable=False),
        sa.Column('header', sa.String(length=128), nullable=True),
        sa.Column('prefix', sa.String(length=32), nullable=False),
        sa.Column('encoding', sa.String(length=8), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('filter', sa.Text(), nullable=True),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('token_prefix', sa.String(length=8), nullable=False),
        sa.Column('disabled_reason', sa.Text(), nullable=True),
        sa.Column('created_by', sa.String(length=256), nullable=False),
        sa.Column('updated_by', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['apg_team.id'], ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['workflow_id'], ['apg_workflow.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    with op.batch_alter_table('apg_webhook', schema=None) as batch_op:
        batch_op.create_index('ix_apg_webhook_workflow', ['workflow_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_apg_webhook_team_id'), ['team_id'], unique=False)
    op.create_table(
        'apg_webhook_delivery',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('webhook_id', sa.String(length=36), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=False),
        sa.Column('delivery_id', sa.String(length=255), nullable=True),
        sa.Column('run_id', sa.String(length=36), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['webhook_id'], ['apg_webhook.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('apg_webhook_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_apg_webhook_delivery_received', ['webhook_id', 'received_at'],
                              unique=False)
    op.create_table(
        'apg_webhook_seen',
        sa.Column('webhook_id', sa.String(length=36), nullable=False),
        sa.Column('delivery_id', sa.String(length=255), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(['webhook_id'], ['apg_webhook.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('webhook_id', 'delivery_id'),
    )
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivery_id', sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.drop_column('delivery_id')
    op.drop_table('apg_webhook_seen')
    with op.batch_alter_table('apg_webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_apg_webhook_delivery_received')
    op.drop_table('apg_webhook_delivery')
    with op.batch_alter_table('apg_webhook', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apg_webhook_team_id'))
        batch_op.drop_index('ix_apg_webhook_workflow')
    op.drop_table('apg_webhook')
