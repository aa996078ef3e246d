"""Keep idempotency keys as their SHA-256 digests, not as sent.

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-01 22:10:00

"""

import hashlib

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0005"
branch_labels = None
depends_on = None

requests = sa.table("idempotent_requests", sa.column("id", sa.Integer), sa.column("key", sa.String))


def upgrade():
    connection = op.get_bind()
    for row in connection.execute(sa.select(requests.c.id, requests.c.key)).all():
        digest = hashlib.sha256(row.key.encode()).hexdigest()
        connection.execute(requests.update().where(requests.c.id == row.id).values(key=digest))


def downgrade():
    # A digest cannot be turned back into its key: the stored answers stay, keyed by
    # digest, and retries of those submissions record anew.
    pass
