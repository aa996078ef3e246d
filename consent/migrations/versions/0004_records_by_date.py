"""Index the history by site and date, for the admin's rates and record log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 06:50:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        "ix_consent_records_site_recorded_at",
        "consent_records",
        ["site_id", "recorded_at"],
    )


def downgrade():
    op.drop_index("ix_consent_records_site_recorded_at", table_name="consent_records")
