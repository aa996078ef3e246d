"""Rights and retention: checkpoints, erased identifiers, the access log.

Retention may now delete history records, but only those a signed checkpoint
covers; checkpoints and the access log are insert-only like the history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 21:27:35.304111

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _sqlite_insert_only(table):
    return [
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
            BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
            BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END""",
    ]


def _postgresql_insert_only(table):
    return [
        f"""CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION consent_append_only()""",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION consent_append_only()""",
    ]


#: A history record may be deleted only once a checkpoint covers it (retention).
SQLITE_GUARDS = [
    "DROP TRIGGER consent_records_no_delete",
    """CREATE TRIGGER consent_records_no_delete BEFORE DELETE ON consent_records
       WHEN NOT EXISTS (SELECT 1 FROM chain_checkpoints AS c
                        WHERE c.site_id = OLD.site_id AND c.sequence >= OLD.sequence)
       BEGIN SELECT RAISE(ABORT, 'consent_records is append-only: DELETE refused'); END""",
    *_sqlite_insert_only("chain_checkpoints"),
    *_sqlite_insert_only("access_log"),
]
POSTGRESQL_GUARDS = [
    """CREATE FUNCTION consent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE OR REPLACE FUNCTION consent_records_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' AND EXISTS (
              SELECT 1 FROM chain_checkpoints AS c
              WHERE c.site_id = OLD.site_id AND c.sequence >= OLD.sequence) THEN
           RETURN OLD;
         END IF;
         RAISE EXCEPTION 'consent_records is append-only: % refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    *_postgresql_insert_only("chain_checkpoints"),
    *_postgresql_insert_only("access_log"),
]


def upgrade():
    op.create_table(
        "access_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject_pseudonym", sa.String(length=40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_access_log_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log")),
    )
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.create_index("ix_access_log_site_at", ["site_id", "at"], unique=False)

    op.create_table(
        "chain_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.Column("records_removed", sa.Integer(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_chain_checkpoints_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_checkpoints")),
        sa.UniqueConstraint(
            "site_id", "sequence", name=op.f("uq_chain_checkpoints_site_id_sequence")
        ),
    )
    op.create_table(
        "erased_identifiers",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_erased_identifiers_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_id", "digest", name=op.f("pk_erased_identifiers")),
    )
    with op.batch_alter_table("current_states", schema=None) as batch_op:
        batch_op.alter_column("record_id", existing_type=sa.INTEGER(), nullable=True)

    # Plain ADD COLUMN: a batch copy of "sites" would cascade deletes on SQLite.
    op.add_column("sites", sa.Column("controller_name", sa.String(length=200), nullable=True))
    op.add_column("sites", sa.Column("controller_contact", sa.String(length=200), nullable=True))

    guards = POSTGRESQL_GUARDS if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER chain_checkpoints_no_update_delete ON chain_checkpoints")
        op.execute("DROP TRIGGER chain_checkpoints_no_truncate ON chain_checkpoints")
        op.execute("DROP TRIGGER access_log_no_update_delete ON access_log")
        op.execute("DROP TRIGGER access_log_no_truncate ON access_log")
        op.execute("DROP FUNCTION consent_append_only()")
        op.execute(
            """CREATE OR REPLACE FUNCTION consent_records_append_only() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                 RAISE EXCEPTION 'consent_records is append-only: % refused', TG_OP
                   USING ERRCODE = 'insufficient_privilege';
               END $$"""
        )
    else:
        op.execute("DROP TRIGGER consent_records_no_delete")
        op.execute(
            """CREATE TRIGGER consent_records_no_delete BEFORE DELETE ON consent_records
               BEGIN SELECT RAISE(ABORT, 'consent_records is append-only: DELETE refused'); END"""
        )
    op.drop_column("sites", "controller_contact")
    op.drop_column("sites", "controller_name")

    with op.batch_alter_table("current_states", schema=None) as batch_op:
        batch_op.alter_column("record_id", existing_type=sa.INTEGER(), nullable=False)

    op.drop_table("erased_identifiers")
    op.drop_table("chain_checkpoints")
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.drop_index("ix_access_log_site_at")

    op.drop_table("access_log")
