"""Decisions recorded per second through the API, against bare write routes, same run.

    python bench/record_throughput.py [--seconds 10] [--rounds 3] [--sites 20] [--instances 2]
                                      [--workers W] [--threads T] [--databases sqlite,postgresql]
                                      [--idempotency-keys]

Each request is a first-time visitor's banner choice for three purposes: a new
subject and visitor, one chained record, three current-state rows, one transaction;
with ``--idempotency-keys``, an ``Idempotency-Key`` of its own too, as the widget sends
(its earlier answer looked for under the chain lock, its answer kept with the record).
Under the same gunicorn config (the shipped gunicorn.conf.py, with ``--workers`` and
``--threads`` if given) and the same load, two floors from ``bench/bare_app.py``: the
request's body inserted as one row and committed ("INSERT"), and the same after
``SELECT ... FOR UPDATE`` of one hot row per site, then updated ("INSERT + hot row", the
shape of a per-site chain head). Runs one site and many sites, on SQLite and
PostgreSQL, prints records/s and each ratio to the floors, then checks that every chain
still verifies and that the record count equals the 201 answers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bare_app import create_tables
from serving import app_for, database, gunicorn, median, print_table, wrk
from sqlalchemy import func, select

from consent.chain import verify_chain
from consent.db import db
from consent.models import ConsentRecord, Site
from consent.sites import STANDARD_PURPOSES, create_site, publish_policy, set_purpose

SCRIPT = Path(__file__).with_name("record.lua")
#: (label, app, URL path): the floors first, then the service.
SERVICE = "consent:create_app()"
ROUTES = [
    ("INSERT", "bare_app:app", "/"),
    ("INSERT + hot row", "bare_app:app", "/hot/"),
    ("record (service)", SERVICE, "/"),
]


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


def load(options, app_spec: str, url: str, path: str, sites: list[str]):
    """Serve ``app_spec`` from ``--instances`` gunicorns and load them all at once.

    Returns the measured runs and the 2xx answers of all runs, warm-up included.
    """
    with contextlib.ExitStack() as servers:
        urls = [
            servers.enter_context(
                gunicorn(app_spec, url, workers=options.workers, threads=options.threads)
            ).url
            + path
            for _ in range(options.instances)
        ]
        # A request that waits long is still answered (and recorded): a timeout would
        # count it as an error although it landed.
        run = functools.partial(
            wrk,
            connections=options.connections,
            script=SCRIPT,
            script_args=(["--idempotency-keys"] if options.idempotency_keys else []) + sites,
            timeout=30,
        )
        with ThreadPoolExecutor(len(urls)) as pool:
            # Warm up (imports, first connections, compiled statements), then measure.
            warm_up = list(pool.map(functools.partial(run, seconds=2), urls))
            measured = list(pool.map(functools.partial(run, seconds=options.seconds), urls))
    answered = sum(result.requests - result.errors for result in warm_up + measured)
    return measured, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="default: gunicorn.conf.py's")
    parser.add_argument("--threads", type=int, default=None, help="default: gunicorn.conf.py's")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per route")
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="each request with an Idempotency-Key of its own, as the widget sends",
    )
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
                create_tables(url, sites)
                # Rounds alternate the routes, so that a busy spell on the shared
                # machine falls on all of them; each figure is the median round.
                figures = {route: ([], 0) for route, _, _ in ROUTES}
                for _ in range(options.rounds):
                    for route, app_spec, path in ROUTES:
                        measured, answered = load(options, app_spec, url, path, sites)
                        runs, total = figures[route]
                        figures[route] = (runs + [measured], total + answered)
                intact, count = chains_and_count(url)
            rows += table_rows(kind, label, figures, intact, count, options)
    print(
        f"\n{options.instances} instance(s) x gunicorn.conf.py "
        f"(workers {options.workers or 'as shipped'}, threads {options.threads or 'as shipped'}), "
        f"wrk {options.connections} connections per instance, {options.seconds} s, 127.0.0.1"
        f"{', an Idempotency-Key per request' if options.idempotency_keys else ''}\n"
    )
    print_table(
        [
            "database",
            "sites",
            "route",
            "records/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "vs INSERT",
            "vs INSERT + hot row",
            "chains verify, records match",
        ],
        rows,
    )


def table_rows(kind: str, label: str, figures: dict, intact: bool, count: int, options):
    """One row per route; the service's row says whether its history is sound."""
    rates = {
        route: median([sum(result.requests_per_second for result in run) for run in runs])
        for route, (runs, _) in figures.items()
    }
    rows = []
    for route, (runs, answered) in figures.items():
        row = [
            kind,
            label,
            route,
            rates[route],
            median([max(result.p50_ms for result in run) for run in runs]),
            median([max(result.p99_ms for result in run) for run in runs]),
            sum(result.errors for run in runs for result in run),
            f"{rates[route] / rates['INSERT']:.2f}",
            f"{rates[route] / rates['INSERT + hot row']:.2f}",
            "",
        ]
        if app_of(route) == SERVICE:
            # wrk stops counting at each deadline; requests in flight then still land.
            in_flight = 2 * options.connections * options.instances * options.rounds
            errors = sum(result.errors for run in runs for result in run)
            is_sound = intact and answered <= count <= answered + errors + in_flight
            row[-1] = "yes" if is_sound else f"NO ({count} records, {answered} 201s)"
        rows.append(row)
    return rows


def app_of(route: str) -> str:
    return next(app_spec for label, app_spec, _ in ROUTES if label == route)


if __name__ == "__main__":
    main()
