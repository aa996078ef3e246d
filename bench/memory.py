"""Resident memory of one app worker before and after 100,000 checks.

    python bench/memory.py [--checks 100000] [--databases sqlite,postgresql]

One gunicorn sync worker (recycling off), a returning visitor's check sent by wrk
until the count is reached; RSS read from /proc for the worker process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from check_throughput import visitor_token
from serving import database, gunicorn, print_table, rss_kib, wrk

SCRIPT = Path(__file__).with_name("stop_after.lua")


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
            wrk(target, seconds=600, connections=4, threads=1, script=SCRIPT,
                script_args=["1000", token])
            worker, = server.worker_pids()
            before = rss_kib(worker)
            result = wrk(target, seconds=600, connections=4, threads=1, script=SCRIPT,
                         script_args=[str(options.checks), token])
            after = rss_kib(worker)
        rows.append([kind, f"{result.requests:,}", f"{before / 1024:.1f}", f"{after / 1024:.1f}",
                     f"{(after - before) / 1024:+.1f}", result.errors])
    print()
    print_table(["database", "checks", "RSS after warm-up MiB", "RSS after MiB", "growth MiB",
                 "errors"], rows)


if __name__ == "__main__":
    main()
