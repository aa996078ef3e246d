"""Abuse limits: how often one client address may record, check and sign in.

Requests are counted per real client address: ``request.remote_addr`` as the trusted
proxies report it (``TRUSTED_PROXIES``, applied by ``consent.security``), never a header
the client writes itself. Counters live in memory by default, which is per worker
process; ``RATELIMIT_STORAGE_URL`` points every process and machine at one Redis,
and while it cannot be reached each process counts in its own memory again. Both
storages are registered with ``limits`` under schemes of their own.

A refused request gets 429 with ``Retry-After``: the API's JSON error shape (a refused
check still says ``allowed: false``) or the admin's error page, from their own handlers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import partial
from urllib.parse import urlsplit

from flask import Flask, Response, request
from flask_limiter import Limiter
from limits import parse_many
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string

from consent.config import ConfigError

log = logging.getLogger(__name__)

#: The scheme of the counters this process keeps itself (the default).
MEMORY_SCHEME = "sweeping-memory"
#: Prefixed to a shared storage's scheme: count in memory while it cannot be reached.
FALLBACK_PREFIX = "fallback+"
#: The shared storages ``limits`` offers (each needs its client library installed).
SHARED_SCHEMES = [
    "redis",
    "rediss",
    "redis+unix",
    "redis+sentinel",
    "redis+cluster",
    "valkey",
    "valkeys",
    "valkey+unix",
    "valkey+sentinel",
    "valkey+cluster",
    "memcached",
    "mongodb",
    "mongodb+srv",
]


class SweepingMemoryStorage(Storage):
    """Fixed-window counters in this process's memory, expired inline, no threads.

    ``limits``' own memory storage starts a timer thread to expire counters after
    nearly every hit; under gunicorn's workers the hand-offs cost milliseconds a
    request (bench/check_throughput.py: 66 checks/s instead of 631). Here a counter
    expires when it is read, and stale ones are swept inline at most once a second.
    """

    STORAGE_SCHEME = [MEMORY_SCHEME]
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.counts: dict[str, int] = {}
        self.expires_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.swept_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self.lock:
            self._sweep(now)
            if self.expires_at.get(key, 0) <= now:
                self.counts[key] = 0
                self.expires_at[key] = now + expiry
            self.counts[key] += amount
            return self.counts[key]

    def get(self, key: str) -> int:
        with self.lock:
            return self.counts.get(key, 0) if self.expires_at.get(key, 0) > time.time() else 0

    def get_expiry(self, key: str) -> float:
        return self.expires_at.get(key, time.time())

    def check(self) -> bool:
        return True

    def reset(self) -> int:
        with self.lock:
            count = len(self.counts)
            self.counts.clear()
            self.expires_at.clear()
            return count

    def clear(self, key: str) -> None:
        with self.lock:
            self.counts.pop(key, None)
            self.expires_at.pop(key, None)

    def _sweep(self, now: float) -> None:
        if now - self.swept_at < self.SWEEP_SECONDS:
            return
        self.swept_at = now
        for key in [key for key, moment in self.expires_at.items() if moment <= now]:
            del self.counts[key], self.expires_at[key]


class FallbackStorage(Storage):
    """A shared storage (``fallback+redis://...``) that counts in memory while it is down.

    A call that fails goes to memory, and so does every call for ``RETRY_SECONDS``
    after it; then the shared storage is tried again. Each process then counts on
    its own, as with the memory default, and never refuses or fails a request
    because the storage is away.
    """

    STORAGE_SCHEME = [f"{FALLBACK_PREFIX}{scheme}" for scheme in SHARED_SCHEMES]
    RETRY_SECONDS = 5.0

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.shared = storage_from_string(uri.removeprefix(FALLBACK_PREFIX), **options)
        self.memory = SweepingMemoryStorage()
        self.down_until = 0.0

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return ()  # the memory answers instead: nothing is raised

    def _call(self, method: str, *args):
        if time.time() >= self.down_until:
            try:
                answer = getattr(self.shared, method)(*args)
            except (StorageError, *_as_tuple(self.shared.base_exceptions)) as error:
                if not self.down_until:
                    log.warning("rate-limit storage unreachable, counting in memory: %s", error)
                self.down_until = time.time() + self.RETRY_SECONDS
            else:
                if self.down_until:
                    log.warning("rate-limit storage reachable again")
                    self.down_until = 0.0
                return answer
        return getattr(self.memory, method)(*args)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._call("incr", key, expiry, amount)

    def get(self, key: str) -> int:
        return self._call("get", key)

    def get_expiry(self, key: str) -> float:
        return self._call("get_expiry", key)

    def check(self) -> bool:
        return self._call("check")

    def reset(self) -> int | None:
        return self._call("reset")

    def clear(self, key: str) -> None:
        self._call("clear", key)


def _as_tuple(exceptions) -> tuple[type[Exception], ...]:
    return exceptions if isinstance(exceptions, tuple) else (exceptions,)


def storage_uri(setting: str) -> str:
    """The ``limits`` storage for ``RATELIMIT_STORAGE_URL``: ours for memory and Redis."""
    scheme = urlsplit(setting).scheme
    if scheme == "memory":  # the library's would start a thread per hit
        return f"{MEMORY_SCHEME}://"
    if scheme in SHARED_SCHEMES:
        return f"{FALLBACK_PREFIX}{setting}"
    return setting


def client_address() -> str:
    """The address a request came from, as the last trusted proxy saw it."""
    return request.remote_addr or "unknown"


def client_address_on_site() -> str:
    """The client's address on the site named in the URL: each site counts apart."""
    return f"{request.view_args['site_key']}/{client_address()}"


#: Endpoint: (the setting that holds its limit, the methods counted, what is counted).
LIMITED_ENDPOINTS = {
    "public.Records": ("RATELIMIT_RECORD", None, client_address_on_site),
    "public.Check": ("RATELIMIT_CHECK", None, client_address_on_site),
    # Counted apart from records: shows cannot use up a visitor's allowance to record.
    "public.Shown": ("RATELIMIT_RECORD", None, client_address_on_site),
    "server.ServerCheck": ("RATELIMIT_CHECK", None, client_address),
    "server.BulkCheck": ("RATELIMIT_CHECK", None, client_address),
    "public.RightsRequests": ("RATELIMIT_RIGHTS_REQUEST", ["POST"], client_address_on_site),
    "rights_pages.request_form": ("RATELIMIT_RIGHTS_REQUEST", ["POST"], client_address_on_site),
    "admin.sign_in": ("RATELIMIT_SIGN_IN", ["POST"], client_address),
}

#: A Redis that stops answering must not hold requests: fail over to memory quickly.
REDIS_TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 1}


#: ``environ`` key: the fast path already counted this request (``LimitCounter``) and
#: hands it to Flask only to answer a failure after recording it.
COUNTED_BY_FAST_PATH = "consent.counted_by_fast_path"


def _counted_by_the_fast_path() -> bool:
    return bool(request.environ.get(COUNTED_BY_FAST_PATH))


def init_limits(app: Flask) -> Limiter | None:
    """Limit the endpoints in ``LIMITED_ENDPOINTS``; call once the blueprints are registered.

    Each app gets its own ``Limiter``: Flask-Limiter keeps the storage on the instance,
    so two apps in one process (the tests) would otherwise share their counters.
    """
    if not app.config["RATELIMIT_ENABLED"]:
        return None
    storage_url = app.config["RATELIMIT_STORAGE_URL"]
    limiter = Limiter(
        key_func=client_address,
        storage_uri=storage_uri(storage_url),
        storage_options=REDIS_TIMEOUTS if storage_url.startswith("redis") else {},
        # FallbackStorage counts in memory while Redis is down; Flask-Limiter's own
        # fallback would build the library's memory storage, with its thread per hit.
        in_memory_fallback_enabled=False,
    )
    limiter.init_app(app)
    limiter.request_filter(_counted_by_the_fast_path)
    for endpoint, (setting, methods, key) in LIMITED_ENDPOINTS.items():
        limit = limiter.limit(
            _checked_limit(app, setting),
            key_func=key,
            methods=methods,
            error_message=partial(_refusal_message, limiter),
        )
        app.view_functions[endpoint] = limit(app.view_functions[endpoint])
    app.after_request(partial(_add_retry_after, limiter))
    return limiter


class LimitCounter:
    """Count requests to one limited endpoint outside Flask, on Flask-Limiter's counters.

    The public check's fast path (``consent.api.fastpath``) answers before Flask runs;
    it counts here under the storage key Flask-Limiter uses (prefix, key, endpoint), so a
    client has one allowance whichever path answers it. A refusal is left to Flask,
    which counts once more, still over the limit, and answers 429 as always.
    """

    def __init__(self, limiter: Limiter, app: Flask, endpoint: str) -> None:
        setting = LIMITED_ENDPOINTS[endpoint][0]
        self.limiter = limiter
        self.items = sorted(parse_many(_checked_limit(app, setting)))
        self.scope = endpoint
        self.prefix = app.config.get("RATELIMIT_KEY_PREFIX") or ""

    def hit(self, key: str) -> bool:
        """Count one request from ``key``; False once any limit is exceeded.

        With Redis down the storage counts in memory (``FallbackStorage``).
        """
        args = [self.prefix, key, self.scope] if self.prefix else [key, self.scope]
        strategy = self.limiter.limiter
        return all(strategy.hit(item, *args) for item in self.items)


def _checked_limit(app: Flask, setting: str) -> str:
    """The limit a setting holds; a mistyped one stops the start, not the limiting."""
    value = str(app.config[setting])
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"CONSENT_{setting} is {value!r}; write a limit like '60/minute' "
            "(several: '5/second;60/minute')."
        ) from None
    return value


def _seconds_to_wait(limiter: Limiter) -> int:
    """Whole seconds until the limit this request broke lets the client in again."""
    return max(1, math.ceil(limiter.current_limit.window.reset_time - time.time()))


def _refusal_message(limiter: Limiter) -> str:
    return (
        f"Too many requests from this address (at most {limiter.current_limit.limit}). "
        f"Try again in {_seconds_to_wait(limiter)} seconds."
    )


def _add_retry_after(limiter: Limiter, response: Response) -> Response:
    """Tell a client the limiter refused when to come back, and not to keep the answer."""
    broken = limiter.current_limit
    if response.status_code == 429 and broken is not None and broken.breached:
        response.headers["Retry-After"] = str(_seconds_to_wait(limiter))
        response.headers["Cache-Control"] = "no-store"
    return response
