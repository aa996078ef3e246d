"""What the request id and request metrics add to each answer, the check's fast path included.

    python bench/request_tracking.py [--requests 50000]

Calls ``consent.ops.RequestTracking`` around a WSGI app that answers at once, and the
same app bare, in alternating rounds in one process; prints the best difference in
microseconds per request (with ``PROMETHEUS_MULTIPROC_DIR`` set: multiprocess mode).
"""

from __future__ import annotations

import argparse
import time

from consent.ops import ROUTE_KEY, RequestTracking

ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/sites/demo/check"}


def answer_at_once(environ, start_response):
    environ[ROUTE_KEY] = "public.Check"
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def microseconds_per_request(app, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        app(dict(ENVIRON), lambda status, headers, exc_info=None: None)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    arguments = parser.parse_args()
    tracked = RequestTracking(answer_at_once)
    microseconds_per_request(tracked, 5_000)  # warm up
    added = min(
        microseconds_per_request(tracked, arguments.requests)
        - microseconds_per_request(answer_at_once, arguments.requests)
        for _ in range(5)
    )
    print(f"request id, count and latency histogram: {added:.1f} µs per request (best of 5)")


if __name__ == "__main__":
    main()
