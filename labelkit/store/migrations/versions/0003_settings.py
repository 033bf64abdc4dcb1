"""workspace settings (key → JSON value)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 13:20:00
"""

import sqlalchemy as sa
from alembic import op

import labelkit.store.schema

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('updated_at', labelkit.store.schema.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('settings')
