"""Initial schema, with the database-level guard on the history.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:19:38.205352

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


#: The history is insert-only. These triggers make the database itself refuse any
#: UPDATE or DELETE (and TRUNCATE on PostgreSQL) of consent_records, whatever the client.
SQLITE_GUARDS = [
    """CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records
       BEGIN SELECT RAISE(ABORT, 'consent_records is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER consent_records_no_delete BEFORE DELETE ON consent_records
       BEGIN SELECT RAISE(ABORT, 'consent_records is append-only: DELETE refused'); END""",
]
POSTGRESQL_GUARDS = [
    """CREATE FUNCTION consent_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'consent_records is append-only: % refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER consent_records_no_update_delete BEFORE UPDATE OR DELETE
       ON consent_records FOR EACH ROW EXECUTE FUNCTION consent_records_append_only()""",
    """CREATE TRIGGER consent_records_no_truncate BEFORE TRUNCATE
       ON consent_records FOR EACH STATEMENT EXECUTE FUNCTION consent_records_append_only()""",
]


def upgrade():
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("allowed_origins", sa.JSON(), nullable=False),
        sa.Column("lifetime_days", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("default_language", sa.String(length=16), nullable=False),
        sa.Column("texts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("lifetime_days BETWEEN 1 AND 395", name=op.f("ck_sites_lifetime_range")),
        sa.CheckConstraint(
            "retention_days >= lifetime_days", name=op.f("ck_sites_retention_covers_lifetime")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("key", name=op.f("uq_sites_key")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_api_keys_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "banner_impressions",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_banner_impressions_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_id", "day", name=op.f("pk_banner_impressions")),
    )
    op.create_table(
        "chain_heads",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_chain_heads_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_chain_heads")),
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("subject_pseudonym", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("config_hash", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("is_gpc", sa.Boolean(), nullable=False),
        sa.Column("ip_truncated", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_consent_records_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
        sa.UniqueConstraint("record_hash", name=op.f("uq_consent_records_record_hash")),
        sa.UniqueConstraint(
            "site_id", "sequence", name=op.f("uq_consent_records_site_id_sequence")
        ),
    )
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_records_subject", ["site_id", "subject_pseudonym", "sequence"], unique=False
        )

    op.create_table(
        "idempotent_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_idempotent_requests_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotent_requests")),
        sa.UniqueConstraint("site_id", "key", name=op.f("uq_idempotent_requests_site_id_key")),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_material", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_policy_versions_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.UniqueConstraint("site_id", "version", name=op.f("uq_policy_versions_site_id_version")),
    )
    op.create_table(
        "purposes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("is_required", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("translations", sa.JSON(), nullable=False),
        sa.Column("cookies", sa.JSON(), nullable=False),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("consent_mode", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('cookie', 'communication')", name=op.f("ck_purposes_kind")),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_purposes_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purposes")),
        sa.UniqueConstraint("site_id", "key", name=op.f("uq_purposes_site_id_key")),
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("pseudonym", sa.String(length=40), nullable=False),
        sa.Column("user_id_digest", sa.String(length=64), nullable=True),
        sa.Column("user_id_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("email_digest", sa.String(length=64), nullable=True),
        sa.Column("email_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_subjects_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
        sa.UniqueConstraint("pseudonym", name=op.f("uq_subjects_pseudonym")),
        sa.UniqueConstraint(
            "site_id", "email_digest", name=op.f("uq_subjects_site_id_email_digest")
        ),
        sa.UniqueConstraint(
            "site_id", "user_id_digest", name=op.f("uq_subjects_site_id_user_id_digest")
        ),
    )
    op.create_table(
        "current_states",
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("purpose_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("is_granted", sa.Boolean(), nullable=False),
        sa.Column("is_withdrawal", sa.Boolean(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["purpose_id"],
            ["purposes.id"],
            name=op.f("fk_current_states_purpose_id_purposes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["consent_records.id"],
            name=op.f("fk_current_states_record_id_consent_records"),
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_current_states_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint(
            "subject_id", "purpose_id", "service", name=op.f("pk_current_states")
        ),
    )
    op.create_table(
        "visitors",
        sa.Column("visitor_id", sa.String(length=40), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_visitors_site_id_sites"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_visitors_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("visitor_id", name=op.f("pk_visitors")),
    )
    with op.batch_alter_table("visitors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visitors_subject_id"), ["subject_id"], unique=False)

    guards = POSTGRESQL_GUARDS if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade():
    with op.batch_alter_table("visitors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visitors_subject_id"))

    op.drop_table("visitors")
    op.drop_table("current_states")
    op.drop_table("subjects")
    op.drop_table("purposes")
    op.drop_table("policy_versions")
    op.drop_table("idempotent_requests")
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_records_subject")

    op.drop_table("consent_records")
    op.drop_table("chain_heads")
    op.drop_table("banner_impressions")
    op.drop_table("api_keys")
    op.drop_table("sites")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION consent_records_append_only()")
