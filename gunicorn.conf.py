"""Production serving: ``gunicorn -c gunicorn.conf.py 'consent:create_app()'``.

Every setting can be overridden from the environment. App processes share nothing
but the database (and Redis for rate limits once configured), so run as many as the
machine has cores, on as many machines as needed.
"""

import multiprocessing
import os
import shutil
import tempfile

from gunicorn import glogging

# Metrics: each worker writes its counts to a file in this folder and /metrics adds
# them up (prometheus-client's multiprocess mode). Set before the app is imported.
_own_metrics_folder = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_folder:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="consent-metrics-")

from consent.config import ConfigError, check_settings  # noqa: E402 - after the line above
from consent.logs import gunicorn_logging  # noqa: E402

# Refuse to start, in one line naming the variable and the fix, when a setting is
# missing or wrong (rather than a traceback from every worker that fails to boot).
try:
    check_settings()
except ConfigError as error:
    raise SystemExit(f"Error: {error.message}") from None

bind = os.environ.get("CONSENT_BIND", "127.0.0.1:8000")
# Submissions in flight together in one worker are appended in one transaction (group
# commit, consent/group_commit.py): fewer workers with more threads form larger batches,
# and fewer workers contend for a chain's lock. One more worker than cores keeps every
# core busy and serves more checks: on 2 cores, 2 x 8 recorded 1.1-1.3x what 3 x 6 did
# under records alone (PostgreSQL), but answered a fifth to a third fewer checks, and
# fewer of both under checks and records at once (bench/mixed_load.py; bench/README.md
# has the figures).
workers = int(os.environ.get("CONSENT_WORKERS", multiprocessing.cpu_count() + 1))
threads = int(os.environ.get("CONSENT_THREADS", "6"))
worker_class = "gthread" if threads > 1 else "sync"
# Recycle workers now and then so that no slow leak can grow without bound.
max_requests = int(os.environ.get("CONSENT_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
timeout = 30
graceful_timeout = 20
keepalive = 5
# Behind a TLS-terminating proxy: trust its X-Forwarded-* (see CONSENT_TRUSTED_PROXIES).
forwarded_allow_ips = os.environ.get("CONSENT_FORWARDED_ALLOW_IPS", "127.0.0.1")
loglevel = os.environ.get("CONSENT_LOG_LEVEL", "info")
errorlog = "-"
# "-" for standard output, or a file; off unless set. Lines go through consent.logs,
# which redacts tokens, keys and emails (the request line and the referrer included).
accesslog = os.environ.get("CONSENT_ACCESS_LOG") or None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms %(a)s request_id=%({x-request-id}o)s'
_log_format = os.environ.get("CONSENT_LOG_FORMAT") or "json"
logconfig_dict = gunicorn_logging(_log_format, accesslog, loglevel)


class Logger(glogging.Logger):
    """gunicorn's own, except that with no access log it makes no access line: given a
    ``logconfig_dict``, gunicorn builds one per request for a logger that writes nowhere
    (about 5% of a recorded decision's CPU, bench/record_throughput.py)."""

    def access(self, resp, req, environ, request_time):
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = Logger


def child_exit(server, worker):
    """Let the metrics of a worker that ended be summed, not watched for."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_folder:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
