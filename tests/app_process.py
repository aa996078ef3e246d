"""The app in a separate OS process, as production runs it: ``python app_process.py MODE``.

Configuration comes from the environment (``CONSENT_DATABASE_URL``, ``CONSENT_SECRET_KEY``,
``CONSENT_DATA_KEY``), exactly as a gunicorn worker gets it.

- ``serve``: a threaded HTTP server on a free port; prints the port, then serves.
- ``hold-writers-turn``: takes SQLite's writers' turn (``consent.db.writers_turn``),
  prints ``held`` and keeps it until killed.
- ``write SITE KEY THREADS``: threads that submit, re-submit, record for users and erase
  them, without end, each through the whole request (commit included); prints one line
  per accepted write, so a test can kill the process in the middle of the stream.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def app_environment(database_url: str, config) -> dict[str, str]:
    """The environment a production worker would get, with the secrets of ``config``."""
    return {
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_SECRET_KEY": config["SECRET_KEY"],
        "CONSENT_DATA_KEY": config["DATA_KEY"],
    }


def start(mode: str, *args: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start this module in a new process; its output is read from ``stdout``."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, str(HERE / "app_process.py"), mode, *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=HERE.parent,
        )


@contextmanager
def app_servers(count: int, env: dict[str, str], log_dir: Path) -> Iterator[list[str]]:
    """Run ``count`` app servers, each its own OS process; yield their base URLs."""
    processes = [
        start("serve", env=env, log_path=log_dir / f"server-{number}.log")
        for number in range(count)
    ]
    try:
        urls = []
        for number, process in enumerate(processes):
            port = process.stdout.readline().strip()
            if not port:
                log = (log_dir / f"server-{number}.log").read_text()
                raise RuntimeError(f"app server {number} did not start:\n{log}")
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.kill()
            process.wait()
            process.stdout.close()


def post_json(url: str, body: dict, headers: dict[str, str] | None = None):
    """POST JSON over real HTTP; returns the status and the decoded answer (or its text)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        text = response.read().decode()
        status = response.status if hasattr(response, "status") else response.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def serve() -> None:
    from werkzeug.serving import make_server

    from consent import create_app

    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    print(server.port, flush=True)
    server.serve_forever()


def write(site_key: str, api_key: str, threads: int) -> None:
    from helpers import ACCEPT_ALL, REJECT_ALL, bearer

    from consent import create_app

    app = create_app()
    printing = threading.Lock()

    def report(line: str) -> None:
        with printing:
            print(line, flush=True)

    def loop(number: int) -> None:
        client = app.test_client()
        chance = random.Random(number)
        token = None
        step = 0
        while True:
            step += 1
            choice = chance.random()
            decisions = ACCEPT_ALL if chance.random() < 0.5 else REJECT_ALL
            user_id = f"user-{number}-{chance.randrange(5)}"
            if choice < 0.6:
                headers = {"X-Consent-Token": token} if token else {}
                if chance.random() < 0.3:
                    headers["Idempotency-Key"] = f"retry-{number:04d}-{step:04d}-{os.getpid()}"
                response = client.post(
                    f"/v1/sites/{site_key}/records",
                    json={"decisions": decisions},
                    headers=headers,
                )
                if response.status_code == 201:
                    token = None if chance.random() < 0.2 else response.get_json()["visitor_token"]
            elif choice < 0.9:
                response = client.post(
                    "/v1/server/records",
                    json={"user_id": user_id, "decisions": decisions},
                    headers=bearer(api_key),
                )
            else:
                response = client.post(
                    "/v1/server/subjects/erase",
                    json={"user_id": user_id},
                    headers=bearer(api_key),
                )
            report(f"{number} {response.status_code}")

    for number in range(threads):
        threading.Thread(target=loop, args=(number,), daemon=True).start()
    threading.Event().wait()


def hold_writers_turn() -> None:
    from sqlalchemy import create_engine

    from consent.db import writers_turn

    with writers_turn(create_engine(os.environ["CONSENT_DATABASE_URL"])):
        print("held", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "serve":
        serve()
    elif mode == "hold-writers-turn":
        hold_writers_turn()
    elif mode == "write":
        write(arguments[0], arguments[1], int(arguments[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
