"""Shared by the benchmarks: databases to measure against, gunicorn, wrk, tables.

Nothing here is imported by the service; only the bench scripts use it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES_ADMIN_URL = os.environ.get(
    "CONSENT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BENCH_SECRETS = {
    "CONSENT_SECRET_KEY": "bench-secret-key",
    "CONSENT_DATA_KEY": base64.b64encode(b"b" * 32).decode(),
}
#: One load generator on one address: the limiter stays on, so its cost is measured,
#: but its limits are out of reach.
BENCH_LIMITS = {"RATELIMIT_RECORD": "1000000/second", "RATELIMIT_CHECK": "1000000/second"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database URL of the given kind, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="consent-bench-") as folder:
            url = f"sqlite:///{folder}/bench.sqlite"
            migrate(url)
            yield url
        return
    import psycopg

    name = f"consent_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = POSTGRES_ADMIN_URL.rpartition("/")[0] + f"/{name}"
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def app_for(url: str):
    from consent import create_app

    return create_app(
        {
            "DATABASE_URL": url,
            "SECRET_KEY": BENCH_SECRETS["CONSENT_SECRET_KEY"],
            "DATA_KEY": BENCH_SECRETS["CONSENT_DATA_KEY"],
            **BENCH_LIMITS,
        }
    )


def migrate(url: str) -> None:
    from flask_migrate import upgrade

    app = app_for(url)
    with app.app_context():
        upgrade()
        from consent.db import db
        from consent.demo import seed_demo_site

        seed_demo_site()
        db.session.commit()
        db.engine.dispose()


@dataclass
class Server:
    url: str
    #: The gunicorn master's process id.
    pid: int

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return [int(pid) for pid in children.split()]


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


@contextlib.contextmanager
def gunicorn(
    app_spec: str, database_url: str = "", *, workers: int | None = 4, threads: int | None = 1
) -> Iterator[Server]:
    """Serve ``app_spec`` with the shipped gunicorn.conf.py; yield where and who.

    ``workers`` or ``threads`` None: as gunicorn.conf.py sets them when not told.
    """
    port = free_port()
    env = {
        **os.environ,
        **BENCH_SECRETS,
        **{f"CONSENT_{name}": value for name, value in BENCH_LIMITS.items()},
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_BIND": f"127.0.0.1:{port}",
        "CONSENT_LOG_LEVEL": "warning",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
    }
    for name, value in (("CONSENT_WORKERS", workers), ("CONSENT_THREADS", threads)):
        env.pop(name, None)
        if value is not None:
            env[name] = str(value)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), app_spec],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/.well-known/gpc.json" if "consent" in app_spec else base + "/")
        yield Server(base, process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not come up")


@dataclass
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk(
    url: str,
    *,
    seconds: int = 10,
    connections: int = 16,
    threads: int = 2,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    script_args: list[str] | None = None,
    timeout: int = 2,
) -> LoadResult:
    """Run wrk against ``url`` on loopback and parse its figures (``timeout`` in seconds)."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command.append(f"--timeout={timeout}s")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> LoadResult:
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return LoadResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_milliseconds(latency["50"]),
        p99_ms=_milliseconds(latency["99"]),
        requests=requests,
        errors=errors,
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(headers: list[str], rows: list[list]) -> None:
    """A plain text table, numbers right-aligned."""
    cells = [[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
