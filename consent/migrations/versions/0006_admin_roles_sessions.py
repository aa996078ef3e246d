"""Admin roles per site, server-side admin sessions, sign-in failures per name and address.

Every admin that exists before this migration becomes an owner of every site, so
nobody loses what they could do.

Revision ID: 0006
Revises: 0009
Create Date: 2026-12-01 22:05:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "admin_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["admin_users.id"],
            name=op.f("fk_admin_roles_admin_id_admin_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_admin_roles_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_roles")),
        sa.UniqueConstraint(
            "admin_id", "site_id", "role", name=op.f("uq_admin_roles_admin_id_site_id_role")
        ),
    )
    op.execute(
        "INSERT INTO admin_roles (admin_id, site_id, role) "
        "SELECT id, NULL, 'owner' FROM admin_users"
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["admin_users.id"],
            name=op.f("fk_admin_sessions_admin_id_admin_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_sessions_token_hash")),
    )
    op.create_index("ix_admin_sessions_admin_id", "admin_sessions", ["admin_id"])
    # Failures are short-lived counters: start the new key (name, address) empty.
    op.drop_table("admin_sign_in_failures")
    _create_failures(with_address=True)


def downgrade():
    op.drop_table("admin_sign_in_failures")
    _create_failures(with_address=False)
    op.drop_index("ix_admin_sessions_admin_id", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    op.drop_table("admin_roles")


def _create_failures(*, with_address: bool):
    key = ["name", "address"] if with_address else ["name"]
    op.create_table(
        "admin_sign_in_failures",
        sa.Column("name", sa.String(length=80), nullable=False),
        *([sa.Column("address", sa.String(length=64), nullable=False)] if with_address else []),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_admin_sign_in_failures")),
    )
