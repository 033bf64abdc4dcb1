"""jobs for the background worker and the worker lease

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:10:00
"""

import sqlalchemy as sa
from alembic import op

import labelkit.store.schema

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('stop_requested', sa.Boolean(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', labelkit.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', labelkit.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', labelkit.store.schema.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name='ck_jobs_status'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_jobs_status', 'jobs', ['status', 'id'], unique=False)
    op.create_table('worker_lease',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('device', sa.String(length=200), nullable=False),
    sa.Column('started_at', labelkit.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', labelkit.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('worker_lease')
    op.drop_index('ix_jobs_status', table_name='jobs')
    op.drop_table('jobs')
