"""A logo URL per site, for its email preference centre.

Revision ID: 0012
Revises: 0006
Create Date: 2026-12-02 10:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("sites", sa.Column("logo_url", sa.String(length=2000), nullable=True))


def downgrade():
    # In place, not batch mode: recreating ``sites`` would break the foreign keys to it.
    op.drop_column("sites", "logo_url")
