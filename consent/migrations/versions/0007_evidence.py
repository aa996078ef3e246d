"""Evidence: a chained access log, the banner archive, rights requests, retention settings.

The access log gains a per-site hash chain (existing entries are chained here, in id
order) and a reason; its entries may be deleted only once a signed checkpoint covers
them. ``erased_identifiers``, the banner archive and the access-log checkpoints are
insert-only like the history (the archive's ``last_served_at`` excepted; an archived
banner no record points to may be purged).

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-01 22:10:00

"""

import hashlib

import sqlalchemy as sa
from alembic import op

from consent.accesslog import canonical_entry
from consent.db import UTCDateTime

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
#: Every banner-archive column but last_served_at is fixed once written.
BANNER_FIXED_COLUMNS = (
    "site_id, config_hash, content, policy, widget_version, widget_integrity, first_served_at"
)


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


SQLITE_GUARDS = [
    "DROP TRIGGER IF EXISTS access_log_no_update",
    "DROP TRIGGER IF EXISTS access_log_no_delete",
    """CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
       BEGIN SELECT RAISE(ABORT, 'access_log is append-only: UPDATE refused'); END""",
    # Retention's path: an entry a signed checkpoint covers may go.
    """CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
       WHEN NOT EXISTS (SELECT 1 FROM access_log_checkpoints AS c
                        WHERE c.site_id = OLD.site_id AND c.sequence >= OLD.sequence)
       BEGIN SELECT RAISE(ABORT, 'access_log is append-only: DELETE refused'); END""",
    *_sqlite_insert_only("access_log_checkpoints"),
    *_sqlite_insert_only("erased_identifiers"),
    f"""CREATE TRIGGER banner_versions_no_update BEFORE UPDATE OF {BANNER_FIXED_COLUMNS}
        ON banner_versions
        BEGIN SELECT RAISE(ABORT, 'banner_versions is append-only: UPDATE refused'); END""",
    # Retention's path: an archived banner that no record points to may go.
    """CREATE TRIGGER banner_versions_no_delete BEFORE DELETE ON banner_versions
       WHEN EXISTS (SELECT 1 FROM consent_records AS r
                    WHERE r.site_id = OLD.site_id AND r.config_hash = OLD.config_hash)
       BEGIN SELECT RAISE(ABORT, 'banner_versions is append-only: DELETE refused'); END""",
]
POSTGRESQL_GUARDS = [
    """CREATE FUNCTION consent_access_log_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' AND EXISTS (
              SELECT 1 FROM access_log_checkpoints AS c
              WHERE c.site_id = OLD.site_id AND c.sequence >= OLD.sequence) THEN
           RETURN OLD;
         END IF;
         RAISE EXCEPTION 'access_log is append-only: % refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER access_log_no_update_delete BEFORE UPDATE OR DELETE ON access_log
       FOR EACH ROW EXECUTE FUNCTION consent_access_log_append_only()""",
    *_postgresql_insert_only("access_log_checkpoints"),
    *_postgresql_insert_only("erased_identifiers"),
    """CREATE FUNCTION consent_banner_versions_guard() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' AND NOT EXISTS (
              SELECT 1 FROM consent_records AS r
              WHERE r.site_id = OLD.site_id AND r.config_hash = OLD.config_hash) THEN
           RETURN OLD;
         END IF;
         RAISE EXCEPTION 'banner_versions is append-only: % refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    f"""CREATE TRIGGER banner_versions_no_update BEFORE UPDATE OF {BANNER_FIXED_COLUMNS}
        ON banner_versions FOR EACH ROW EXECUTE FUNCTION consent_banner_versions_guard()""",
    """CREATE TRIGGER banner_versions_no_delete BEFORE DELETE ON banner_versions
       FOR EACH ROW EXECUTE FUNCTION consent_banner_versions_guard()""",
    """CREATE TRIGGER banner_versions_no_truncate BEFORE TRUNCATE ON banner_versions
       FOR EACH STATEMENT EXECUTE FUNCTION consent_append_only()""",
]


def _chain_existing_entries(connection) -> dict[int, tuple[int, str]]:
    """Give the entries written before the chain a sequence and hashes, in id order."""
    access_log = sa.table(
        "access_log",
        sa.column("id", sa.Integer),
        sa.column("site_id", sa.Integer),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("subject_pseudonym", sa.String),
        sa.column("at", UTCDateTime),
        sa.column("details", sa.JSON),
        sa.column("sequence", sa.Integer),
        sa.column("previous_hash", sa.String),
        sa.column("entry_hash", sa.String),
    )
    sites = sa.table("sites", sa.column("id", sa.Integer), sa.column("key", sa.String))
    heads: dict[int, tuple[int, str]] = {}
    rows = connection.execute(
        sa.select(access_log, sites.c.key.label("site_key"))
        .join(sites, sites.c.id == access_log.c.site_id)
        .order_by(access_log.c.site_id, access_log.c.id)
    ).all()
    for row in rows:
        sequence, previous = heads.get(row.site_id, (0, GENESIS_HASH))
        sequence += 1
        entry_hash = hashlib.sha256(
            canonical_entry(
                site_key=row.site_key,
                sequence=sequence,
                actor=row.actor,
                action=row.action,
                subject_pseudonym=row.subject_pseudonym,
                reason=None,
                at=row.at,
                details=row.details,
                previous_hash=previous,
            )
        ).hexdigest()
        connection.execute(
            sa.update(access_log)
            .where(access_log.c.id == row.id)
            .values(sequence=sequence, previous_hash=previous, entry_hash=entry_hash)
        )
        heads[row.site_id] = (sequence, entry_hash)
    return heads


def upgrade():
    is_postgresql = op.get_bind().dialect.name == "postgresql"
    # Plain ADD COLUMN: a batch copy of "sites" would cascade deletes on SQLite.
    for name, default in [
        ("access_log_retention_days", "730"),
        ("rights_request_retention_days", "1095"),
        ("idempotency_retention_hours", "24"),
    ]:
        op.add_column(
            "sites", sa.Column(name, sa.Integer(), nullable=False, server_default=default)
        )
    op.add_column("policy_versions", sa.Column("text_sha256", sa.String(length=64)))
    op.add_column("visitors", sa.Column("last_seen_at", sa.DateTime(timezone=True)))

    op.create_table(
        "access_log_heads",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_access_log_heads_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_access_log_heads")),
    )
    op.create_table(
        "access_log_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("entries_removed", sa.Integer(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_access_log_checkpoints_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log_checkpoints")),
        sa.UniqueConstraint(
            "site_id", "sequence", name=op.f("uq_access_log_checkpoints_site_id_sequence")
        ),
    )
    op.create_table(
        "banner_versions",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=True),
        sa.Column("widget_version", sa.String(length=32), nullable=False),
        sa.Column("widget_integrity", sa.String(length=100), nullable=False),
        sa.Column("first_served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_served_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_banner_versions_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("site_id", "config_hash", name=op.f("pk_banner_versions")),
    )
    op.create_table(
        "rights_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("email_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("message", sa.String(length=2000), nullable=True),
        sa.Column("subject_pseudonym", sa.String(length=40), nullable=True),
        sa.Column("verified_by", sa.String(length=32), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extension_reason", sa.String(length=2000), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal_reason", sa.String(length=2000), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('access', 'export', 'correction', 'erasure', 'objection')",
            name=op.f("ck_rights_requests_kind"),
        ),
        sa.CheckConstraint(
            "state IN ('received', 'verified', 'extended', 'completed', 'refused')",
            name=op.f("ck_rights_requests_state"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_rights_requests_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_requests")),
        sa.UniqueConstraint("reference", name=op.f("uq_rights_requests_reference")),
    )
    op.create_index(
        "ix_rights_requests_site_due", "rights_requests", ["site_id", "state", "due_at"]
    )

    # Chain the entries written so far: the guards come off for that, and back on after.
    if is_postgresql:
        op.execute("DROP TRIGGER access_log_no_update_delete ON access_log")
    else:
        op.execute("DROP TRIGGER access_log_no_update")
        op.execute("DROP TRIGGER access_log_no_delete")
    op.add_column("access_log", sa.Column("sequence", sa.Integer(), nullable=True))
    op.add_column("access_log", sa.Column("reason", sa.String(length=500), nullable=True))
    op.add_column("access_log", sa.Column("previous_hash", sa.String(length=64), nullable=True))
    op.add_column("access_log", sa.Column("entry_hash", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    heads = _chain_existing_entries(connection)
    site_ids = connection.execute(sa.text("SELECT id FROM sites")).scalars().all()
    access_log_heads = sa.table(
        "access_log_heads",
        sa.column("site_id", sa.Integer),
        sa.column("sequence", sa.Integer),
        sa.column("entry_hash", sa.String),
    )
    for site_id in site_ids:
        sequence, entry_hash = heads.get(site_id, (0, GENESIS_HASH))
        connection.execute(
            sa.insert(access_log_heads).values(
                site_id=site_id, sequence=sequence, entry_hash=entry_hash
            )
        )
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.alter_column("sequence", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("previous_hash", existing_type=sa.String(64), nullable=False)
        batch_op.alter_column("entry_hash", existing_type=sa.String(64), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_access_log_site_id_sequence"), ["site_id", "sequence"]
        )
        batch_op.create_unique_constraint(batch_op.f("uq_access_log_entry_hash"), ["entry_hash"])

    guards = POSTGRESQL_GUARDS if is_postgresql else SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in [
            ("access_log_no_update_delete", "access_log"),
            ("access_log_checkpoints_no_update_delete", "access_log_checkpoints"),
            ("access_log_checkpoints_no_truncate", "access_log_checkpoints"),
            ("erased_identifiers_no_update_delete", "erased_identifiers"),
            ("erased_identifiers_no_truncate", "erased_identifiers"),
            ("banner_versions_no_update", "banner_versions"),
            ("banner_versions_no_delete", "banner_versions"),
            ("banner_versions_no_truncate", "banner_versions"),
        ]:
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.execute("DROP FUNCTION consent_access_log_append_only()")
        op.execute("DROP FUNCTION consent_banner_versions_guard()")
    else:
        for trigger in [
            "access_log_no_update",
            "access_log_no_delete",
            "access_log_checkpoints_no_update",
            "access_log_checkpoints_no_delete",
            "erased_identifiers_no_update",
            "erased_identifiers_no_delete",
            "banner_versions_no_update",
            "banner_versions_no_delete",
        ]:
            op.execute(f"DROP TRIGGER {trigger}")
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_access_log_entry_hash"), type_="unique")
        batch_op.drop_constraint(batch_op.f("uq_access_log_site_id_sequence"), type_="unique")
        for name in ("entry_hash", "previous_hash", "reason", "sequence"):
            batch_op.drop_column(name)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """CREATE TRIGGER access_log_no_update_delete BEFORE UPDATE OR DELETE ON access_log
               FOR EACH ROW EXECUTE FUNCTION consent_append_only()"""
        )
    else:
        for statement in _sqlite_insert_only("access_log"):
            op.execute(statement)
    op.drop_index("ix_rights_requests_site_due", table_name="rights_requests")
    op.drop_table("rights_requests")
    op.drop_table("banner_versions")
    op.drop_table("access_log_checkpoints")
    op.drop_table("access_log_heads")
    op.drop_column("visitors", "last_seen_at")
    op.drop_column("policy_versions", "text_sha256")
    for name in (
        "idempotency_retention_hours",
        "rights_request_retention_days",
        "access_log_retention_days",
    ):
        op.drop_column("sites", name)
