"""Check latency as the history grows: 10 thousand, 1 million, 10 million records.

    python bench/history_growth.py [--sizes 10000,1000000,10000000] [--databases sqlite]

One database per kind, grown step by step with the bulk loader (bench/bulk_load.py);
after each step, checks for random returning visitors are timed in-process through the
Flask test client (the whole request: routing, token, the one SQL statement, JSON).
The goal: p50 at the largest size within 1.2x of p50 at the smallest.
"""

from __future__ import annotations

import argparse
import random
import time

from bulk_load import RECORDS_PER_VISITOR, load
from serving import app_for, database, percentile, print_table

from consent.tokens import make_visitor_token

CHECKS = 3000


def time_checks(url: str, records: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of CHECKS checks for random loaded visitors."""
    app = app_for(url)
    client = app.test_client()
    visitors = max(1, records // RECORDS_PER_VISITOR)
    rng = random.Random(7)
    with app.app_context():
        tokens = [make_visitor_token("demo", f"bulk-visitor-{rng.randrange(visitors)}")
                  for _ in range(CHECKS)]
    for token in tokens[:200]:  # warm caches and the connection pool
        client.get("/v1/sites/demo/check?purpose=analytics", headers={"X-Consent-Token": token})
    timings = []
    for token in tokens:
        started = time.perf_counter()
        response = client.get("/v1/sites/demo/check?purpose=analytics",
                              headers={"X-Consent-Token": token})
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200 and response.json["reason"] != "no_decision"
    return percentile(timings, 0.5), percentile(timings, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    rows = []
    for kind in options.databases.split(","):
        with database(kind) as url:
            baseline = None
            for size in sizes:
                started = time.perf_counter()
                load(url, "demo", size)
                loaded_in = time.perf_counter() - started
                p50, p99 = time_checks(url, size)
                baseline = baseline or p50
                rows.append([kind, f"{size:,}", p50 * 1.0, p99 * 1.0, f"{p50 / baseline:.2f}",
                             f"{loaded_in:.0f} s"])
                print(f"{kind} {size:,}: p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)
    print()
    print_table(["database", "records", "p50 ms", "p99 ms", "p50 vs smallest", "load time"],
                [[r[0], r[1], f"{r[2]:.3f}", f"{r[3]:.3f}", r[4], r[5]] for r in rows])


if __name__ == "__main__":
    main()
