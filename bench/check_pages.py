"""Buffer pages one check touches on PostgreSQL, as shipped and with covering indexes.

    python bench/check_pages.py [--records 1000000]

Loads a history (bench/bulk_load.py), then runs the check's one statement under
``EXPLAIN (ANALYZE, BUFFERS)`` for random loaded visitors, before and after adding
covering indexes from visitor to current state (which make every scan index-only).
Fewer pages per check is what keeps the check flat as the history grows.
"""

from __future__ import annotations

import argparse
import random
import time

import psycopg
from bulk_load import RECORDS_PER_VISITOR, load
from serving import app_for, database, percentile, print_table

from consent import check
from consent.db import db

CHECKS = 400
COVERING_INDEXES = [
    "CREATE INDEX bench_visitors_check ON visitors (visitor_id, site_id, subject_id)",
    "CREATE INDEX bench_subjects_check ON subjects (id) INCLUDE (erased_at)",
    "CREATE INDEX bench_current_states_check ON current_states (subject_id, purpose_id, "
    "service) INCLUDE (is_granted, is_withdrawal, decided_at, expires_at, "
    "policy_published_at)",
]
CHECK_TABLES = ("visitors", "subjects", "current_states")


def measure(url: str, records: int) -> tuple[float, float, float, float]:
    """Mean pages per check, of them read outside shared buffers, p50 ms, working set MB."""
    app = app_for(url)
    with app.app_context():
        sql, fixed, *_ = check._check_on_driver(db.engine.dialect)
    chance = random.Random(3)
    visitors = max(1, records // RECORDS_PER_VISITOR)
    pages, reads, times = [], [], []
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        for _ in range(CHECKS):
            params = {
                **fixed,
                "site_key": "demo",
                "visitor_id": f"bulk-visitor-{chance.randrange(visitors)}",
                "purpose_key": "analytics",
                "service": "",
            }
            if "now" in fixed:  # the check reads policies in effect at this time
                params["now"] = check.now_utc()
            explained = connection.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params
            ).fetchone()[0][0]
            plan = explained["Plan"]
            pages.append(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])
            reads.append(plan["Shared Read Blocks"])
            times.append(explained["Execution Time"])
        (working_set,) = connection.execute(
            "SELECT sum(pg_total_relation_size(name::regclass)) FROM unnest(%s::text[]) name",
            [list(CHECK_TABLES)],
        ).fetchone()
    return (
        sum(pages) / len(pages),
        sum(reads) / len(reads),
        percentile(times, 0.5),
        int(working_set) / 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    options = parser.parse_args()
    with database("postgresql") as url:
        started = time.perf_counter()
        load(url, "demo", options.records)
        print(f"loaded {options.records:,} records in {time.perf_counter() - started:.0f} s")
        rows = [["as shipped", *measure(url, options.records)]]
        with psycopg.connect(url, autocommit=True) as connection:
            for statement in COVERING_INDEXES:
                connection.execute(statement)
        rows.append(["covering indexes", *measure(url, options.records)])
    print_table(
        ["indexes", "pages per check", "read outside buffers", "p50 ms", "working set MB"],
        [[name, f"{a:.1f}", f"{b:.2f}", f"{c:.3f}", f"{d:.1f}"] for name, a, b, c, d in rows],
    )


if __name__ == "__main__":
    main()
