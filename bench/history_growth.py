"""Check latency as the history grows: 10 thousand, 1 million, 10 million records.

    python bench/history_growth.py [--sizes 10000,1000000,10000000] [--databases sqlite]

Per kind, a small database (the first size) and a large one grown step by step with
the bulk loader (bench/bulk_load.py); after each step, checks for random returning
visitors are timed in-process through the Flask test client (the whole request:
routing, token, the one SQL statement, JSON), on both databases in alternating rounds,
so the ratio is measured side by side. Goal: p50 at 10M within 1.2x of p50 at 10k.
"""

from __future__ import annotations

import argparse
import random
import time

from bulk_load import RECORDS_PER_VISITOR, load
from serving import app_for, database, percentile, print_table

from consent.tokens import make_visitor_token

CHECKS = 3000
ROUNDS = 6


def _checker(url: str, records: int):
    """A function that times one batch of checks for random loaded visitors (ms each)."""
    app = app_for(url)
    client = app.test_client()
    visitors = max(1, records // RECORDS_PER_VISITOR)
    rng = random.Random(7)
    with app.app_context():
        tokens = [
            make_visitor_token("demo", f"bulk-visitor-{rng.randrange(visitors)}")
            for _ in range(CHECKS)
        ]

    def run(batch: list[str]) -> list[float]:
        timings = []
        for token in batch:
            started = time.perf_counter()
            response = client.get(
                "/v1/sites/demo/check?purpose=analytics", headers={"X-Consent-Token": token}
            )
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and response.json["reason"] != "no_decision"
        return timings

    run(tokens[:200])  # warm caches and the connection pool
    return run, tokens


def time_side_by_side(small_url: str, small: int, large_url: str, large: int):
    """p50 and p99 (ms) for the small and the large history, timed in alternating rounds.

    Alternating means both see the same machine: a neighbour's load shifts both, not
    the ratio.
    """
    runs = [_checker(small_url, small), _checker(large_url, large)]
    timings: list[list[float]] = [[], []]
    size = CHECKS // ROUNDS
    for round_number in range(ROUNDS):
        for index, (run, tokens) in enumerate(runs):
            timings[index] += run(tokens[round_number * size : (round_number + 1) * size])
    return [(percentile(t, 0.5), percentile(t, 0.99)) for t in timings]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    options = parser.parse_args()
    smallest, *sizes = [int(size) for size in options.sizes.split(",")]
    rows = []
    for kind in options.databases.split(","):
        with database(kind) as small_url, database(kind) as url:
            load(small_url, "demo", smallest)
            for size in sizes:
                started = time.perf_counter()
                load(url, "demo", size)
                loaded_in = time.perf_counter() - started
                (p50_small, p99_small), (p50, p99) = time_side_by_side(
                    small_url, smallest, url, size
                )
                rows.append(
                    [
                        kind,
                        f"{smallest:,}",
                        f"{p50_small:.3f}",
                        f"{p99_small:.3f}",
                        f"{size:,}",
                        f"{p50:.3f}",
                        f"{p99:.3f}",
                        f"{p50 / p50_small:.2f}",
                        f"{loaded_in:.0f} s",
                    ]
                )
                print(" ".join(rows[-1]), flush=True)
    print()
    print_table(
        [
            "database",
            "small",
            "p50 ms",
            "p99 ms",
            "large",
            "p50 ms",
            "p99 ms",
            "p50 large/small",
            "load time",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
