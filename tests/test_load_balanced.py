"""Two gunicorn instances behind HAProxy on PostgreSQL and Redis, one killed mid-run.

What it shows: every record the load balancer answered 201 for is in the history once,
the chain verifies, the rate limit is one count across both instances, and each event
reaches the webhook endpoint once. It prints what it did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from app_process import app_environment
from serving import Gunicorn, free_port, wait_until_healthy
from sqlalchemy import func, select
from webhook_receiver import start_receiver

from consent.client import ConsentClient, ConsentError
from consent.db import db
from consent.models import ConsentRecord, Subject

pytestmark = pytest.mark.postgres

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONSENT = str(Path(sys.executable).with_name("consent"))
RECORDS = 120
CHECK_LIMIT = 20


def haproxy_config(port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"    server app{number} 127.0.0.1:{backend} check"
        for number, backend in enumerate(backends)
    )
    return (
        textwrap.dedent(
            f"""\
        global
            maxconn 256
        defaults
            mode http
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            retries 3
            option redispatch 1
            # A POST carries an Idempotency-Key: sending it again elsewhere is safe.
            option http-buffer-request
            retry-on all-retryable-errors
            default-server inter 300ms fall 2 rise 2
        frontend consent
            bind 127.0.0.1:{port}
            option forwardfor
            default_backend apps
        backend apps
            balance roundrobin
            option httpchk GET /readyz
        """
        )
        + servers
        + "\n"
    )


@pytest.fixture
def postgres_url(database_url, dialect):
    if dialect != "postgresql":
        pytest.skip("several machines share PostgreSQL, not a SQLite file")
    return database_url


def test_a_load_balanced_pair_survives_a_killed_instance(
    app, postgres_url, demo_site, make_key, runner, tmp_path
):
    if not Path(HAPROXY).exists():
        if os.environ.get("CI"):
            pytest.fail("HAProxy is required in CI (make loadbalancer)")
        pytest.skip("no HAProxy (make loadbalancer installs Debian's)")
    receiver, receiver_server = start_receiver()
    result = runner.invoke(
        args=["add-webhook", demo_site, receiver.url, "--event", "consent.recorded"]
    )
    receiver.secret = result.output.rsplit("shown once: ", 1)[1].strip()
    key = make_key(demo_site, "read", "write")
    lb_port = free_port()
    env = {
        **app_environment(postgres_url, app.config),
        "CONSENT_PUBLIC_URL": f"http://127.0.0.1:{lb_port}",
        "CONSENT_TRUSTED_PROXIES": "1",
        "CONSENT_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
        "CONSENT_RATELIMIT_KEY_PREFIX": f"pair-{uuid.uuid4().hex[:8]}",
        # Per hour: a fixed window that the few checks below are unlikely to straddle.
        "CONSENT_RATELIMIT_CHECK": f"{CHECK_LIMIT}/hour",
        "CONSENT_RATELIMIT_RECORD": "100000/minute",
    }
    instances = [Gunicorn(env, tmp_path, f"app{number}").start() for number in range(2)]
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(lb_port, [instance.port for instance in instances]))
    with open(tmp_path / "haproxy.log", "ab") as log:
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{lb_port}"
    try:
        wait_until_healthy(base_url)
        accepted: list[str] = []
        refused: list[str] = []
        lock = threading.Lock()
        kills = 0

        def write(number: int) -> None:
            user_id = f"pair-user-{number}"
            with ConsentClient(base_url, key, retries=5) as client:
                try:
                    client.record(
                        [{"purpose": "analytics", "granted": number % 2 == 0}], user_id=user_id
                    )
                except (ConsentError, OSError) as error:
                    with lock:
                        refused.append(f"{user_id}: {error}")
                    return
            with lock:
                accepted.append(user_id)

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(write, number) for number in range(RECORDS // 3)]
            time.sleep(0.3)
            instances[0].kill()  # mid-run, requests in flight
            kills += 1
            futures += [pool.submit(write, number) for number in range(RECORDS // 3, RECORDS)]
            time.sleep(1.0)
            instances[0].start()  # back on the same port; HAProxy sees it ready again
            for future in futures:
                future.result()

        time.sleep(1.0)  # both instances in rotation for the rate-limit round
        statuses = []
        for _ in range(CHECK_LIMIT + 10):
            request = urllib.request.Request(
                f"{base_url}/v1/sites/{demo_site}/check?purpose=analytics"
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)

        dispatchers = [
            subprocess.Popen(
                [CONSENT, "dispatch", "--once", "--batch", "5"],
                env={**os.environ, **env},
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for dispatcher in dispatchers:
            _, errors = dispatcher.communicate(timeout=300)
            assert dispatcher.returncode == 0, errors
    finally:
        haproxy.terminate()
        haproxy.wait()
        for instance in instances:
            instance.stop()
        receiver_server.shutdown()
        receiver_server.server_close()

    with app.app_context():
        records_per_subject = dict(
            db.session.execute(
                select(Subject.pseudonym, func.count(ConsentRecord.id))
                .join(ConsentRecord, ConsentRecord.subject_pseudonym == Subject.pseudonym)
                .group_by(Subject.pseudonym)
            ).all()
        )
        total = db.session.scalar(select(func.count()).select_from(ConsentRecord))
    verify = subprocess.run(
        [CONSENT, "verify", demo_site],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ids = [message.message_id for message in receiver.delivered]
    print(
        f"\nload-balanced pair: {RECORDS} records sent, {len(accepted)} accepted, "
        f"{len(refused)} refused, {kills} instance killed and restarted; "
        f"{total} records in the history; checks {statuses.count(200)} allowed through, "
        f"{statuses.count(429)} refused (limit {CHECK_LIMIT}); "
        f"{len(ids)} webhook deliveries, {len(set(ids))} distinct; {verify.stdout.strip()}"
    )
    assert len(accepted) == RECORDS, refused
    assert set(records_per_subject.values()) == {1}
    assert total == len(records_per_subject) == RECORDS
    assert verify.returncode == 0, verify.stdout
    assert statuses.count(200) == CHECK_LIMIT
    assert statuses.count(429) == 10
    assert len(ids) == len(set(ids)) == RECORDS
