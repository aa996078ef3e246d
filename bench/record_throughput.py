"""Decisions recorded per second through the API, with the hash chain and current state.

    python bench/record_throughput.py [--seconds 10] [--workers 4] [--sites 20]

Each request is a first-time visitor's banner choice for three purposes: a new
subject and visitor, one chained record, three current-state rows, one transaction.
Runs one site (every append serialised on that site's chain head) and many sites
(appends to different chains run in parallel), on SQLite and PostgreSQL, then checks
that every chain still verifies and that the record count equals the 201 answers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serving import app_for, database, gunicorn, print_table, wrk
from sqlalchemy import func, select

from consent.chain import verify_chain
from consent.db import db
from consent.models import ConsentRecord, Site
from consent.sites import STANDARD_PURPOSES, create_site, publish_policy, set_purpose

SCRIPT = Path(__file__).with_name("record.lua")


def add_sites(url: str, count: int) -> list[str]:
    app = app_for(url)
    with app.app_context():
        keys = []
        for index in range(count):
            site = create_site(f"bench-{index}", f"Bench {index}")
            for position, purpose in enumerate(STANDARD_PURPOSES):
                set_purpose(
                    site,
                    purpose["key"],
                    position=position,
                    **{k: v for k, v in purpose.items() if k != "key"},
                )
            publish_policy(site, "v1", is_material=True)
            keys.append(site.key)
        db.session.commit()
        db.engine.dispose()
    return keys


def chains_and_count(url: str) -> tuple[bool, int]:
    app = app_for(url)
    with app.app_context():
        intact = all(verify_chain(site).is_intact for site in db.session.scalars(select(Site)))
        count = db.session.scalar(select(func.count()).select_from(ConsentRecord))
        db.engine.dispose()
    return intact, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="app instances (each its own gunicorn) sharing the database",
    )
    options = parser.parse_args()
    rows = []
    for kind in options.databases.split(","):
        for label in ("one site", f"{options.sites} sites"):
            with database(kind) as url:
                sites = ["demo"] if label == "one site" else add_sites(url, options.sites)
                with contextlib.ExitStack() as servers:
                    bases = [
                        servers.enter_context(
                            gunicorn("consent:create_app()", url, workers=options.workers)
                        ).url
                        for _ in range(options.instances)
                    ]
                    with ThreadPoolExecutor(len(bases)) as pool:
                        load = functools.partial(
                            wrk,
                            seconds=options.seconds,
                            connections=options.connections,
                            script=SCRIPT,
                            script_args=sites,
                        )
                        results = list(pool.map(load, [base + "/" for base in bases]))
                intact, count = chains_and_count(url)
            answered = sum(result.requests - result.errors for result in results)
            errors = sum(result.errors for result in results)
            # wrk stops counting at the deadline; requests in flight then still land.
            in_flight = options.connections * len(bases)
            is_sound = intact and answered <= count <= answered + in_flight
            rows.append(
                [
                    kind,
                    label,
                    sum(r.requests_per_second for r in results),
                    max(r.p50_ms for r in results),
                    max(r.p99_ms for r in results),
                    errors,
                    "yes" if is_sound else f"NO ({count} records, {answered} 201s)",
                ]
            )
    print(
        f"\n{options.instances} instance(s) x {options.workers} gunicorn sync workers, "
        f"wrk {options.connections} connections per instance, {options.seconds} s, "
        f"127.0.0.1\n"
    )
    print_table(
        [
            "database",
            "sites",
            "records/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "chains verify, records match",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
