"""Check endpoint throughput under gunicorn, against a bare Flask route, same settings.

    python bench/check_throughput.py [--seconds 10] [--rounds 3] [--workers 4] [--threads 1]
                                     [--databases sqlite,postgresql]

Starts the shipped gunicorn config on 127.0.0.1, loads it with wrk (Debian package
``wrk``) for the bare route, then per database for a bare route that makes one
``SELECT 1`` round trip (the floor under anything that reads that database) and for the
check of a returning visitor who decided; prints requests/s, p50 and p99, the ratio to
the bare route (the goal: 0.8) and to the database floor. Every server stays up for the
whole run and the routes take turns, round after round; each figure is the median round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import urllib.request

from serving import LoadResult, database, gunicorn, median, print_table, wrk

DECISIONS = [{"purpose": "analytics", "granted": True}, {"purpose": "marketing", "granted": False}]


def visitor_token(base: str) -> str:
    request = urllib.request.Request(
        f"{base}/v1/sites/demo/records",
        data=json.dumps({"decisions": DECISIONS}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["visitor_token"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per route")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="gthread workers if above 1")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--databases", default="sqlite,postgresql")
    options = parser.parse_args()

    rows = []
    with contextlib.ExitStack() as servers:
        bare = servers.enter_context(
            gunicorn("bare_app:app", workers=options.workers, threads=options.threads)
        )
        targets = {"bare Flask route": (bare.url + "/", {})}
        for kind in options.databases.split(","):
            url = servers.enter_context(database(kind))
            floor = servers.enter_context(
                gunicorn("bare_app:app", url, workers=options.workers, threads=options.threads)
            )
            service = servers.enter_context(
                gunicorn(
                    "consent:create_app()", url, workers=options.workers, threads=options.threads
                )
            )
            check = f"{service.url}/v1/sites/demo/check?purpose=analytics"
            targets[f"bare route + SELECT 1 ({kind})"] = (floor.url + "/select-1", {})
            targets[f"check ({kind})"] = (check, {"X-Consent-Token": visitor_token(service.url)})
        figures = alternate(targets, options)
    for name, each in figures.items():
        kind = name.rpartition("(")[2].rstrip(")")
        floor = figures.get(f"bare route + SELECT 1 ({kind})")
        rows.append(
            [
                name,
                each.requests_per_second,
                each.p50_ms,
                each.p99_ms,
                f"{each.requests_per_second / figures['bare Flask route'].requests_per_second:.2f}",
                f"{each.requests_per_second / floor.requests_per_second:.2f}" if floor else "",
                each.errors,
            ]
        )
    print(
        f"\n{options.workers} gunicorn workers x {options.threads} thread(s), "
        f"wrk {options.connections} connections, {options.seconds} s each, "
        f"median of {options.rounds} alternating rounds, 127.0.0.1\n"
    )
    print_table(["endpoint", "req/s", "p50 ms", "p99 ms", "vs bare", "vs DB floor", "errors"], rows)


def alternate(targets: dict[str, tuple[str, dict]], options) -> dict[str, LoadResult]:
    """Load each target in turn, round after round, so that a busy spell on the shared
    machine falls on all of them; each figure is the target's median round (errors: all)."""
    for url, headers in targets.values():
        wrk(url, seconds=2, headers=headers)  # warm up
    runs = {name: [] for name in targets}
    load = {"seconds": options.seconds, "connections": options.connections}
    for _ in range(options.rounds):
        for name, (url, headers) in targets.items():
            runs[name].append(wrk(url, headers=headers, **load))
    return {
        name: LoadResult(
            requests_per_second=median([r.requests_per_second for r in results]),
            p50_ms=median([r.p50_ms for r in results]),
            p99_ms=median([r.p99_ms for r in results]),
            requests=sum(r.requests for r in results),
            errors=sum(r.errors for r in results),
        )
        for name, results in runs.items()
    }


if __name__ == "__main__":
    main()
