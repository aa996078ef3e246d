"""Production serving: ``gunicorn -c gunicorn.conf.py 'consent:create_app()'``.

Every setting can be overridden from the environment. App processes share nothing
but the database (and Redis for rate limits once configured), so run as many as the
machine has cores, on as many machines as needed.
"""

import multiprocessing
import os

bind = os.environ.get("CONSENT_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONSENT_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("CONSENT_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
# Recycle workers now and then so that no slow leak can grow without bound.
max_requests = int(os.environ.get("CONSENT_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
timeout = 30
graceful_timeout = 20
keepalive = 5
# Behind a TLS-terminating proxy: trust its X-Forwarded-* (see CONSENT_TRUSTED_PROXIES).
forwarded_allow_ips = os.environ.get("CONSENT_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("CONSENT_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("CONSENT_LOG_LEVEL", "info")
