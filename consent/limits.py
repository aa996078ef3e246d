"""Abuse limits: how often one client address may record, check and sign in.

Requests are counted per real client address: ``request.remote_addr`` as the trusted
proxies report it (``TRUSTED_PROXIES``, applied by ``consent.security``), never a header
the client writes itself. Counters live in memory by default, which is per worker
process; ``RATELIMIT_STORAGE_URL`` points every process and machine at one Redis.

A refused request gets 429 with ``Retry-After``: the API's JSON error shape (a refused
check still says ``allowed: false``) or the admin's error page, from their own handlers.
"""

from __future__ import annotations

import math
import time
from functools import partial

from flask import Flask, Response, request
from flask_limiter import Limiter
from limits import parse_many
from limits.storage import MemoryStorage

from consent.config import ConfigError


class SweepingMemoryStorage(MemoryStorage):
    """``memory://`` without a timer thread per hit (registered for that scheme).

    The library's memory storage starts a thread to expire counters after nearly every
    hit; under gunicorn's sync workers the thread hand-offs cost milliseconds a request
    (bench/check_throughput.py: 66 checks/s instead of 631). Counters still expire when
    read; here the sweep of stale keys runs inline, at most once a second.
    """

    STORAGE_SCHEME = ["memory"]
    SWEEP_SECONDS = 1.0
    _swept_at = 0.0

    # Replaces the base class's private ``__schedule_expiry`` (name-mangled there).
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.time()
        if now - self._swept_at >= self.SWEEP_SECONDS:
            self._swept_at = now
            self._MemoryStorage__expire_events()


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
    "server.ServerCheck": ("RATELIMIT_CHECK", None, client_address),
    "server.BulkCheck": ("RATELIMIT_CHECK", None, client_address),
    "admin.sign_in": ("RATELIMIT_SIGN_IN", ["POST"], client_address),
}

#: A Redis that stops answering must not hold requests: fail over to memory quickly.
REDIS_TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 1}


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
        storage_uri=storage_url,
        storage_options=REDIS_TIMEOUTS if storage_url.startswith("redis") else {},
        # If the storage is down, count in this process rather than refuse or fail.
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
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

    The public check's fast path (``consent.api.fastcheck``) answers before Flask runs;
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

        Raises what the storage raises (Redis down): the caller then leaves the
        request to Flask-Limiter, which falls back to memory.
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
