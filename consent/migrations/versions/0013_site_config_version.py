"""A version per site's configuration, bumped by the database on every change to it.

Recording keeps each site's settings, purposes, policy versions and webhook endpoints
in memory per process (``consent.site_facts``) and checks them against this number on
each use. The database bumps it itself, whoever writes (the app, the CLI, a migration,
plain SQL), so no cached copy outlives a change by more than one request.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-02 17:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

#: The tables whose rows are part of a site's configuration (each has ``site_id``).
PARTS = ("purposes", "policy_versions", "webhook_endpoints")

BUMP = "UPDATE sites SET config_version = config_version + 1 WHERE id = {}"


def _sqlite_triggers():
    yield """CREATE TRIGGER sites_config_version AFTER UPDATE ON sites
             WHEN NEW.config_version = OLD.config_version
             BEGIN UPDATE sites SET config_version = OLD.config_version + 1
                   WHERE id = NEW.id; END"""
    for table in PARTS:
        yield f"""CREATE TRIGGER {table}_site_version_insert AFTER INSERT ON {table}
                  BEGIN {BUMP.format("NEW.site_id")}; END"""
        yield f"""CREATE TRIGGER {table}_site_version_update AFTER UPDATE ON {table}
                  BEGIN {BUMP.format("OLD.site_id")};
                        UPDATE sites SET config_version = config_version + 1
                        WHERE id = NEW.site_id AND NEW.site_id <> OLD.site_id; END"""
        yield f"""CREATE TRIGGER {table}_site_version_delete AFTER DELETE ON {table}
                  BEGIN {BUMP.format("OLD.site_id")}; END"""


def _postgresql_triggers():
    yield """CREATE FUNCTION consent_site_config_version() RETURNS trigger
             LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.config_version = OLD.config_version THEN
                 NEW.config_version := OLD.config_version + 1;
               END IF;
               RETURN NEW;
             END $$"""
    yield """CREATE TRIGGER sites_config_version BEFORE UPDATE ON sites
             FOR EACH ROW EXECUTE FUNCTION consent_site_config_version()"""
    yield f"""CREATE FUNCTION consent_site_part_changed() RETURNS trigger
              LANGUAGE plpgsql AS $$
              BEGIN
                IF TG_OP <> 'INSERT' THEN {BUMP.format("OLD.site_id")}; END IF;
                IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.site_id <> OLD.site_id) THEN
                  {BUMP.format("NEW.site_id")};
                END IF;
                RETURN NULL;
              END $$"""
    for table in PARTS:
        yield f"""CREATE TRIGGER {table}_site_version AFTER INSERT OR UPDATE OR DELETE
                  ON {table} FOR EACH ROW EXECUTE FUNCTION consent_site_part_changed()"""


def upgrade():
    op.add_column(
        "sites", sa.Column("config_version", sa.Integer(), nullable=False, server_default="0")
    )
    triggers = _postgresql_triggers if op.get_context().dialect.name == "postgresql" else None
    for statement in (triggers or _sqlite_triggers)():
        op.execute(statement)


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        for table in PARTS:
            op.execute(f"DROP TRIGGER {table}_site_version ON {table}")
        op.execute("DROP TRIGGER sites_config_version ON sites")
        op.execute("DROP FUNCTION consent_site_part_changed()")
        op.execute("DROP FUNCTION consent_site_config_version()")
    else:
        for table in PARTS:
            for change in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_site_version_{change}")
        op.execute("DROP TRIGGER sites_config_version")
    op.drop_column("sites", "config_version")
