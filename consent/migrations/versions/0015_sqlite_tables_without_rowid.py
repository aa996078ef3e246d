"""SQLite: visitors and current states kept in their primary key's order (WITHOUT ROWID).

An SQLite table with a primary key other than an integer is two B-trees: the rows by a
hidden rowid, and the key's index pointing at them. The check looks up a visitor and
its current states by those keys, so each lookup read two pages where one would do,
and a large history, not all in memory, pays each as a read from disk. As WITHOUT ROWID
tables the rows live in the key's own B-tree: one page per lookup, and one B-tree less
to write per appended record. PostgreSQL has no rowid: nothing changes there.

On SQLite the two tables are copied in one write transaction: writers wait for it
(about 9 seconds per 10 million records), and the file needs room for the copy.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 11:15:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TABLES = ("visitors", "current_states")


def _rebuild(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}
        ):
            pass


def upgrade() -> None:
    _rebuild(with_rowid=False)


def downgrade() -> None:
    _rebuild(with_rowid=True)
