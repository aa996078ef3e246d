"""Check endpoint throughput under gunicorn, against a bare Flask route, same settings.

    python bench/check_throughput.py [--seconds 10] [--workers 4] [--databases sqlite,postgresql]

Starts the shipped gunicorn config on 127.0.0.1, loads it with wrk (Debian package
``wrk``) for the bare route, then per database for a bare route that makes one
``SELECT 1`` round trip (the floor under anything that reads that database) and for the
check of a returning visitor who decided; prints requests/s, p50 and p99, the ratio to
the bare route (the goal: 0.8) and to the database floor.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from serving import database, gunicorn, print_table, wrk

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
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--databases", default="sqlite,postgresql")
    options = parser.parse_args()
    load = {"seconds": options.seconds, "connections": options.connections}

    rows = []
    with gunicorn("bare_app:app", workers=options.workers) as server:
        wrk(server.url + "/", seconds=2)  # warm up
        bare = wrk(server.url + "/", **load)
    rows.append(
        [
            "bare Flask route",
            bare.requests_per_second,
            bare.p50_ms,
            bare.p99_ms,
            "1.00",
            "",
            bare.errors,
        ]
    )
    for kind in options.databases.split(","):
        with database(kind) as url:
            with gunicorn("bare_app:app", url, workers=options.workers) as server:
                wrk(server.url + "/select-1", seconds=2)
                floor = wrk(server.url + "/select-1", **load)
            with gunicorn("consent:create_app()", url, workers=options.workers) as server:
                token = visitor_token(server.url)
                target = f"{server.url}/v1/sites/demo/check?purpose=analytics"
                headers = {"X-Consent-Token": token}
                wrk(target, seconds=2, headers=headers)
                result = wrk(target, headers=headers, **load)
        for name, each in ((f"bare route + SELECT 1 ({kind})", floor), (f"check ({kind})", result)):
            rows.append(
                [
                    name,
                    each.requests_per_second,
                    each.p50_ms,
                    each.p99_ms,
                    f"{each.requests_per_second / bare.requests_per_second:.2f}",
                    f"{each.requests_per_second / floor.requests_per_second:.2f}",
                    each.errors,
                ]
            )
    print(
        f"\n{options.workers} gunicorn sync workers, wrk {options.connections} connections, "
        f"{options.seconds} s each, 127.0.0.1\n"
    )
    print_table(["endpoint", "req/s", "p50 ms", "p99 ms", "vs bare", "vs DB floor", "errors"], rows)


if __name__ == "__main__":
    main()
