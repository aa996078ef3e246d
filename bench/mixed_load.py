"""Checks and records sent at once, under gunicorn configs compared side by side.

    python bench/mixed_load.py [--configs 3x6,2x8] [--seconds 10] [--rounds 3]
                               [--check-connections 12] [--record-connections 4]
                               [--databases postgresql]

A site's real traffic mixes both: many checks (every page view's analytics and
marketing code) and a few records (first visits, changed minds). Per database, one
server per ``workers x threads`` config (the first is the baseline), all up for the
whole run; in each round every config is loaded in turn with wrk asking the check of a
returning visitor and wrk recording first visits (bench/record.lua), both at once. Each
figure is the config's median round, with its ratio to the first config's.
"""

from __future__ import annotations

import argparse
import contextlib
from concurrent.futures import ThreadPoolExecutor

from check_throughput import visitor_token
from record_throughput import SCRIPT
from serving import database, gunicorn, median, print_table, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="3x6,2x8", help="workers x threads, comma-separated")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check-connections", type=int, default=12)
    parser.add_argument("--record-connections", type=int, default=4)
    parser.add_argument("--databases", default="postgresql")
    options = parser.parse_args()
    configs = [tuple(int(n) for n in each.split("x")) for each in options.configs.split(",")]

    rows = []
    for kind in options.databases.split(","):
        with database(kind) as url, contextlib.ExitStack() as servers:
            targets = []
            for workers, threads in configs:
                server = servers.enter_context(
                    gunicorn("consent:create_app()", url, workers=workers, threads=threads)
                )
                token = visitor_token(server.url)
                targets.append((server.url, token))
            for base, token in targets:
                _both_at_once(base, token, 2, options)  # warm up
            runs = [([], []) for _ in configs]
            for _ in range(options.rounds):
                for (base, token), (checks, records) in zip(targets, runs, strict=True):
                    check, record = _both_at_once(base, token, options.seconds, options)
                    checks.append(check)
                    records.append(record)
        first_check, first_record = (median(figures) for figures in runs[0])
        for (workers, threads), (checks, records) in zip(configs, runs, strict=True):
            check, record = median(checks), median(records)
            rows.append(
                [
                    kind,
                    f"{workers} x {threads}",
                    check,
                    f"{check / first_check:.2f}",
                    record,
                    f"{record / first_record:.2f}",
                ]
            )
    print(
        f"\nwrk {options.check_connections} connections checking and "
        f"{options.record_connections} recording, at once, {options.seconds} s, "
        f"median of {options.rounds} alternating rounds, 127.0.0.1\n"
    )
    print_table(
        ["database", "workers x threads", "checks/s", "vs first", "records/s", "vs first"], rows
    )


def _both_at_once(base: str, token: str, seconds: int, options) -> tuple[float, float]:
    """Requests per second of the check and of recording, loaded together."""
    with ThreadPoolExecutor(2) as pool:
        check = pool.submit(
            wrk,
            f"{base}/v1/sites/demo/check?purpose=analytics",
            seconds=seconds,
            connections=options.check_connections,
            headers={"X-Consent-Token": token},
        )
        record = pool.submit(
            wrk,
            base + "/",
            seconds=seconds,
            connections=options.record_connections,
            script=SCRIPT,
            timeout=30,
        )
        return check.result().requests_per_second, record.result().requests_per_second


if __name__ == "__main__":
    main()
