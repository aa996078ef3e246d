"""Banner appearance per site, and the count of refused origins.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:30:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("appearance", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "refused_origins",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site_id", "origin"),
    )


def downgrade():
    op.drop_table("refused_origins")
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("appearance")
