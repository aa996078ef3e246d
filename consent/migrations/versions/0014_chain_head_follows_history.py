"""The chain head follows the history: the database moves it on every appended record.

A site's chain head (its last sequence and hash) was moved by the writer, one more
statement under the chain lock per transaction. The database now moves it itself after
each insert into ``consent_records``, whoever inserts, so the head can never lag
behind the history it summarises.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 06:30:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: SQLite's triggers run per row, in the same process: one cheap update each.
SQLITE = """CREATE TRIGGER consent_records_move_head AFTER INSERT ON consent_records
            BEGIN UPDATE chain_heads SET sequence = NEW.sequence, record_hash = NEW.record_hash
                  WHERE site_id = NEW.site_id AND sequence < NEW.sequence; END"""
#: PostgreSQL's runs once per statement, over the rows that statement inserted.
POSTGRESQL = [
    """CREATE FUNCTION consent_chain_head_follows() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE chain_heads AS head
         SET sequence = last.sequence, record_hash = last.record_hash
         FROM (SELECT DISTINCT ON (site_id) site_id, sequence, record_hash FROM appended
               ORDER BY site_id, sequence DESC) AS last
         WHERE head.site_id = last.site_id AND head.sequence < last.sequence;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER consent_records_move_head AFTER INSERT ON consent_records
       REFERENCING NEW TABLE AS appended
       FOR EACH STATEMENT EXECUTE FUNCTION consent_chain_head_follows()""",
]


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        for statement in POSTGRESQL:
            op.execute(statement)
    else:
        op.execute(SQLITE)


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER consent_records_move_head ON consent_records")
        op.execute("DROP FUNCTION consent_chain_head_follows()")
    else:
        op.execute("DROP TRIGGER consent_records_move_head")
