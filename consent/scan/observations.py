"""What a scan is asked to do and what the browser saw: plain data, JSON-ready."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: The three passes, each in a fresh browser profile, in the order they run.
PASSES = ("before", "reject", "accept")
PASS_TITLES = {
    "before": "before any choice",
    "reject": "after Reject all",
    "accept": "after Accept all",
}


@dataclass(frozen=True)
class ScanPlan:
    """Where to scan and how, decided before the browser starts."""

    site_key: str
    start_urls: list[str]
    #: Hosts that are the site's own: its allowed origins' hosts and any --allow-host.
    site_hosts: list[str]
    #: Origins (scheme://host[:port]) whose pages may be visited.
    allowed_origins: list[str]
    #: The banner's button names in every language of the site.
    accept_labels: list[str]
    reject_labels: list[str]
    #: Hosts given with --allow-host: their pages may be visited too, on any port.
    allowed_hosts: list[str] = field(default_factory=list)
    max_pages: int = 10
    time_limit: float = 300.0
    page_timeout: float = 15.0

    @property
    def storage_key(self) -> str:
        """The key the banner keeps its own state under (never a finding)."""
        return f"consent:{self.site_key}"

    def may_visit(self, url: str) -> bool:
        return origin_of(url) in self.allowed_origins or (
            urlsplit(url).scheme in ("http", "https")
            and (urlsplit(url).hostname or "") in self.allowed_hosts
        )

    def is_site_host(self, host: str) -> bool:
        return any(is_same_or_parent(host, own) for own in self.site_hosts)

    def may_request(self, host: str) -> bool:
        """Refuse the server's own network to pages of a site that is not on it.

        Only addresses written in the URL (and ``localhost``) are caught: a public name
        that resolves to a private address is not.
        """
        if any(is_internal_host(own) for own in self.site_hosts):
            return True  # a site under test on this machine or network
        return not is_internal_host(host)


@dataclass
class CookieSeen:
    """A cookie in the browser after a page, the first time a pass saw it."""

    pass_name: str
    page: str
    name: str
    domain: str
    path: str
    #: Seconds it had left to live when seen; None for a session cookie.
    lifetime_seconds: float | None
    secure: bool
    http_only: bool
    same_site: str
    is_third_party: bool
    #: The script or response that set it, when the browser told us.
    set_by: str | None = None


@dataclass
class StorageSeen:
    """A localStorage or sessionStorage key, or an IndexedDB database name."""

    pass_name: str
    page: str
    origin: str
    kind: str  # "localStorage", "sessionStorage" or "indexedDB"
    key: str


@dataclass
class RequestSeen:
    """Requests of one pass to a third-party host, with the first page that made one."""

    pass_name: str
    page: str
    host: str
    resource_type: str
    url: str
    count: int = 1


@dataclass
class Problem:
    """Something that stopped or bounded the scan of a page (never a crash)."""

    pass_name: str
    page: str
    message: str


@dataclass
class Observations:
    """Everything the three passes saw."""

    pages: list[str] = field(default_factory=list)
    cookies: list[CookieSeen] = field(default_factory=list)
    storage: list[StorageSeen] = field(default_factory=list)
    requests: list[RequestSeen] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: The consent service's own origin (where the banner came from), if found.
    service_origin: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observations:
        return cls(
            pages=list(data.get("pages", [])),
            cookies=[CookieSeen(**row) for row in data.get("cookies", [])],
            storage=[StorageSeen(**row) for row in data.get("storage", [])],
            requests=[RequestSeen(**row) for row in data.get("requests", [])],
            problems=[Problem(**row) for row in data.get("problems", [])],
            service_origin=data.get("service_origin"),
        )


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL, lower-case, default ports left out."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return ""
    suffix = f":{port}" if port and port != default else ""
    return f"{parts.scheme}://{host}{suffix}"


def is_internal_host(host: str) -> bool:
    """Whether a host is this machine or a private network (loopback, private, link-local)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def is_same_or_parent(host: str, other: str) -> bool:
    """Whether two hosts are one site: equal, or one a subdomain of the other."""
    host, other = host.lstrip(".").lower(), other.lstrip(".").lower()
    return host == other or host.endswith("." + other) or other.endswith("." + host)
