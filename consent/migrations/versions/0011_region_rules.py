"""Region rules per site, opt-out and notice flags per purpose, region and mode per record.

Revision ID: 0011
Revises: 0012
Create Date: 2026-12-02 09:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0012"
branch_labels = None
depends_on = None


def columns():
    """(table, column), new each time (a column joins the table it is added to).

    Plain ADD COLUMN and DROP COLUMN everywhere: a batch copy of "sites" would cascade
    deletes on SQLite, and one of "consent_records" would drop its triggers.
    """
    return [
        ("sites", sa.Column("region_rules", sa.JSON(), nullable=False, server_default="[]")),
        (
            "purposes",
            sa.Column(
                "is_opt_out_default", sa.Boolean(), nullable=False, server_default=sa.false()
            ),
        ),
        (
            "purposes",
            sa.Column("is_notice_only", sa.Boolean(), nullable=False, server_default=sa.false()),
        ),
        ("consent_records", sa.Column("region", sa.String(length=8), nullable=True)),
        ("consent_records", sa.Column("mode", sa.String(length=16), nullable=True)),
    ]


def upgrade():
    for table, column in columns():
        op.add_column(table, column)


def downgrade():
    for table, column in reversed(columns()):
        op.drop_column(table, column.name)
