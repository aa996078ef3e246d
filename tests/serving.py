"""gunicorn with the shipped configuration, in its own process group, as production runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(base_url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


class Gunicorn:
    """One gunicorn instance (master and workers) on a port of its own."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, port: int | None = None):
        self.env = env
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout = log_dir / f"{name}.out"
        self.stderr = log_dir / f"{name}.err"
        self.process: subprocess.Popen | None = None

    def start(self) -> Gunicorn:
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")},
            "CONSENT_BIND": f"127.0.0.1:{self.port}",
            "CONSENT_WORKERS": "2",
            **self.env,
        }
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.stdout, "ab") as out, open(self.stderr, "ab") as err:
            self.process = subprocess.Popen(
                [GUNICORN, "-c", str(ROOT / "gunicorn.conf.py"), "consent:create_app()"],
                env=environment,
                stdout=out,
                stderr=err,
                cwd=ROOT,
                start_new_session=True,
            )
        wait_until_healthy(self.base_url)
        return self

    def kill(self) -> None:
        """Kill the master and its workers at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def gunicorn(env: dict[str, str], log_dir: Path, name: str = "gunicorn"):
    server = Gunicorn(env, log_dir, name).start()
    try:
        yield server
    finally:
        server.stop()
