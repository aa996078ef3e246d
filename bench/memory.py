"""Resident memory of one app worker before and after 100,000 checks.

    python bench/memory.py [--checks 100000] [--databases sqlite,postgresql]

One gunicorn sync worker (recycling off), a returning visitor's check sent by wrk in
10-second rounds until at least the count is reached (the table says how many); RSS
read from /proc for the worker process after warm-up and at the end.
"""

from __future__ import annotations

import argparse
import os

from check_throughput import visitor_token
from serving import database, gunicorn, print_table, rss_kib, wrk

ROUND_SECONDS = 10


def send_checks(target: str, token: str, count: int) -> tuple[int, int]:
    """At least ``count`` checks in wrk rounds; returns (sent, errors)."""
    sent = errors = 0
    while sent < count:
        result = wrk(
            target,
            seconds=ROUND_SECONDS,
            connections=4,
            threads=1,
            headers={"X-Consent-Token": token},
        )
        sent += result.requests
        errors += result.errors
    return sent, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    options = parser.parse_args()
    os.environ["CONSENT_MAX_REQUESTS"] = "0"  # no recycling while we measure
    rows = []
    for kind in options.databases.split(","):
        with database(kind) as url, gunicorn("consent:create_app()", url, workers=1) as server:
            token = visitor_token(server.url)
            target = f"{server.url}/v1/sites/demo/check?purpose=analytics"
            send_checks(target, token, 1000)  # warm up
            (worker,) = server.worker_pids()
            before = rss_kib(worker)
            sent, errors = send_checks(target, token, options.checks)
            after = rss_kib(worker)
        rows.append(
            [
                kind,
                f"{sent:,}",
                f"{before / 1024:.1f}",
                f"{after / 1024:.1f}",
                f"{(after - before) / 1024:+.1f}",
                errors,
            ]
        )
    print()
    print_table(
        ["database", "checks", "RSS after warm-up MiB", "RSS after MiB", "growth MiB", "errors"],
        rows,
    )


if __name__ == "__main__":
    main()
