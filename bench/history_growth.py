"""Check latency as the history grows: 10 thousand, 1 million, 10 million records.

    python bench/history_growth.py [--sizes 10000,1000000,10000000] [--databases sqlite]

Per kind, a small database (the first size) and a large one grown step by step with
the bulk loader (bench/bulk_load.py); after each step, checks for random returning
visitors are timed in-process through the Flask test client (the whole request:
routing, token, the one SQL statement, JSON), on both databases in alternating rounds,
so the ratio is measured side by side. Goal: p50 at 10M within 1.2x of p50 at 10k.

Each visitor is timed twice: its first check reads its pages from wherever they are
(on a 10M history, often from storage: the operating system keeps only what was read
lately), and its next check, as on a visitor's next page view, finds them in memory.
For SQLite, which reads in this process, the pages read from storage per first check
are printed too.
"""

from __future__ import annotations

import argparse
import random
import time

from bulk_load import RECORDS_PER_VISITOR, load
from serving import app_for, database, percentile, print_table

from consent.tokens import make_visitor_token

CHECKS = 3000
WARM_UP = 200
ROUNDS = 6
#: Each visitor's checks timed: its first, then its next.
PASSES = ("first", "next")


def _checker(url: str, records: int):
    """A function that times one batch of checks for random loaded visitors (ms each)."""
    app = app_for(url)
    client = app.test_client()
    visitors = max(1, records // RECORDS_PER_VISITOR)
    rng = random.Random(7)
    with app.app_context():
        tokens = [
            make_visitor_token("demo", f"bulk-visitor-{rng.randrange(visitors)}")
            for _ in range(CHECKS + WARM_UP)
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

    run(tokens[CHECKS:])  # the connection pool and the upper pages, with other visitors
    return run, tokens[:CHECKS]


def _pages_read() -> int:
    """Pages (4 KiB) this process has read from storage so far (SQLite reads in process)."""
    with open("/proc/self/io") as counters:
        fields = dict(line.split(": ") for line in counters.read().splitlines())
    return int(fields["read_bytes"]) // 4096


def time_side_by_side(small_url: str, small: int, large_url: str, large: int):
    """For each visitor's first check, then its next: p50 and p99 (ms) for the small and
    the large history, timed in alternating rounds, and the large history's pages read
    from storage per check.

    Alternating means both see the same machine: a neighbour's load shifts both, not
    the ratio.
    """
    runs = [_checker(small_url, small), _checker(large_url, large)]
    passes = []
    size = CHECKS // ROUNDS
    for _ in PASSES:
        timings: list[list[float]] = [[], []]
        pages = 0
        for round_number in range(ROUNDS):
            for index, (run, tokens) in enumerate(runs):
                before = _pages_read()
                timings[index] += run(tokens[round_number * size : (round_number + 1) * size])
                if index == 1:  # the large history
                    pages += _pages_read() - before
        passes.append(
            [(percentile(t, 0.5), percentile(t, 0.99)) for t in timings] + [pages / CHECKS]
        )
    return passes


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
                passes = time_side_by_side(small_url, smallest, url, size)
                for check, ((p50_small, p99_small), (p50, p99), pages) in zip(
                    PASSES, passes, strict=True
                ):
                    rows.append(
                        [
                            kind,
                            check,
                            f"{smallest:,}",
                            f"{p50_small:.3f}",
                            f"{p99_small:.3f}",
                            f"{size:,}",
                            f"{p50:.3f}",
                            f"{p99:.3f}",
                            f"{p50 / p50_small:.2f}",
                            f"{pages:.2f}" if kind == "sqlite" else "-",
                            f"{loaded_in:.0f} s",
                        ]
                    )
                    print(" ".join(rows[-1]), flush=True)
    print()
    print_table(
        [
            "database",
            "check of a visitor",
            "small",
            "p50 ms",
            "p99 ms",
            "large",
            "p50 ms",
            "p99 ms",
            "p50 large/small",
            "pages from storage",
            "load time",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
