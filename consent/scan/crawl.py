"""Drive Chromium through a site's pages in three passes and record what they set.

Each pass runs in a fresh browser context (no persistent profile, nothing shared with
the others). The first pass finds the pages: breadth-first over same-site links from the
start URLs, up to ``max_pages``; the other two visit the same pages after clicking the
banner's "Reject all" or "Accept all" on the first one, by the buttons' accessible names.
Every wait is bounded: a page that hangs, redirects forever, leaves the site or opens
dialogs is noted as a problem and the scan goes on; the browser is always closed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import urldefrag, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from consent.scan.browser import CHROMIUM, CHROMIUM_ARGS
from consent.scan.observations import (
    PASSES,
    CookieSeen,
    Observations,
    Problem,
    RequestSeen,
    ScanPlan,
    StorageSeen,
    origin_of,
)

#: Report ``document.cookie`` writes with the script that made them (from its stack).
COOKIE_WATCH = """
(() => {
  const original = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie');
  if (!original || !original.set) return;
  Object.defineProperty(Document.prototype, 'cookie', {
    configurable: true,
    enumerable: original.enumerable,
    get() { return original.get.call(this); },
    set(value) {
      try {
        const text = String(value);
        if (!/max-age=0|expires=thu, 01 jan 1970/i.test(text)) {
          const stack = new Error().stack || '';
          const url = (stack.match(/https?:\\/\\/[^\\s)]+?(?=:\\d+:\\d+)/) || [null])[0];
          window.__consentScanCookie(text.split('=')[0].trim(), url);
        }
      } catch (e) {}
      original.set.call(this, value);
    },
  });
})();
"""

STORAGE_KEYS = """
async () => {
  const out = { origin: location.origin, localStorage: [], sessionStorage: [], indexedDB: [] };
  try { out.localStorage = Object.keys(localStorage); } catch (e) {}
  try { out.sessionStorage = Object.keys(sessionStorage); } catch (e) {}
  try { out.indexedDB = (await indexedDB.databases()).map((d) => d.name); } catch (e) {}
  return out;
}
"""

WIDGET_ORIGIN = """
() => {
  const s = document.querySelector('script[data-site][src*="consent.js"]');
  return { origin: s ? new URL(s.src, location.href).origin : null };
}
"""

LINKS = "() => [...document.querySelectorAll('a[href]')].map((a) => a.href)"

#: After the load event: wait for the network to go quiet, at most this long (seconds).
SETTLE_SECONDS = 3.0
#: How long the banner may take to appear (seconds).
BANNER_SECONDS = 8.0
#: How long a page may take to answer one question (its storage keys, its links).
EVALUATE_SECONDS = 3.0

Progress = Callable[[str, str, int], None]


class ScanError(Exception):
    """The browser could not be started or went away: the scan has no result."""


class _Pass:
    """One pass: its browser context, what it saw, and the bounds it keeps."""

    def __init__(self, browser, plan: ScanPlan, name: str, seen: Observations, deadline: float):
        self.plan, self.name, self.seen, self.deadline = plan, name, seen, deadline
        self.page_url = ""
        self.set_by: dict[str, str] = {}
        self.known_cookies: set[tuple[str, str, str]] = set()
        self.known_storage: set[tuple[str, str, str]] = set()
        self.requests: dict[tuple[str, str], RequestSeen] = {}
        self.context = browser.new_context(accept_downloads=False, service_workers="block")
        self.context.set_default_timeout(plan.page_timeout * 1000)
        self.context.add_init_script(COOKIE_WATCH)
        self.context.expose_binding("__consentScanCookie", self._cookie_written)
        self.context.route("**/*", self._route)
        self.context.on("request", self._request)
        self.context.on("response", self._response)
        self.is_opening = self.is_hung = False
        self.context.on("page", self._popup)
        self.page = self._open_page()

    # --- browser events ------------------------------------------------------------

    def problem(self, message: str) -> None:
        self.seen.problems.append(Problem(self.name, self.page_url, message))

    def _cookie_written(self, source, name: str, url: str | None) -> None:
        if name and url:
            self.set_by.setdefault(name, url)

    def _leaves_site(self, request) -> bool:
        try:
            is_top = request.is_navigation_request() and request.frame.parent_frame is None
        except PlaywrightError:
            return False  # no frame (a worker's request)
        return is_top and not self.plan.may_visit(request.url)

    def _route(self, route, request) -> None:
        # A page may lead anywhere; the scan only ever loads the site's own pages. (Chromium
        # follows redirects without asking: ``visit`` notices those.)
        if self._leaves_site(request):
            self.problem(f"left the site for {origin_of(request.url) or request.url}: not followed")
            route.abort("blockedbyclient")
        elif not self.plan.may_request(urlsplit(request.url).hostname or ""):
            self.problem(f"asked for {origin_of(request.url)} on a private network: refused")
            route.abort("blockedbyclient")
        else:
            route.continue_()

    def _request(self, request) -> None:
        parts = urlsplit(request.url)
        host = parts.hostname or ""
        if self._leaves_site(request) and request.redirected_from is None:
            return  # refused in _route, never sent
        if not self.plan.may_request(host):
            return  # refused in _route too
        if parts.scheme not in ("http", "https") or self.plan.is_site_host(host):
            return
        if origin_of(request.url) == self.seen.service_origin:
            return  # the banner talking to this service
        key = (host, request.resource_type)
        if key in self.requests:
            self.requests[key].count += 1
        else:
            self.requests[key] = RequestSeen(
                self.name,
                self.page_url,
                host,
                request.resource_type,
                f"{parts.scheme}://{parts.netloc}{parts.path}",
            )

    def _response(self, response) -> None:
        try:
            values = response.headers_array()
        except PlaywrightError:
            return
        for header in values:
            if header["name"].lower() == "set-cookie":
                for line in header["value"].split("\n"):
                    name = line.split("=", 1)[0].strip()
                    if name:
                        self.set_by.setdefault(name, response.url.split("?", 1)[0])

    def _dialog(self, dialog) -> None:
        self.problem(f"opened a dialog ({dialog.type}): dismissed")
        try:
            dialog.dismiss()
        except PlaywrightError:
            pass

    def _open_page(self):
        self.is_opening = True
        try:
            page = self.context.new_page()
        finally:
            self.is_opening = False
        page.on("dialog", self._dialog)
        return page

    def _popup(self, page) -> None:
        if not self.is_opening:
            self.problem("opened a new window: closed")
            try:
                page.close()
            except PlaywrightError:
                pass

    # --- visiting and collecting ---------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def visit(self, url: str) -> bool:
        """Load a page within the bounds; False if there is nothing to collect."""
        self.recover()
        self.page_url = url
        timeout = max(min(self.plan.page_timeout, self.remaining()), 1) * 1000
        try:
            self.page.goto(url, wait_until="load", timeout=timeout)
        except PlaywrightTimeout:
            self.problem(f"did not finish loading in {timeout / 1000:.0f} s")
            self.is_hung = True  # read its cookies, ask it nothing
        except PlaywrightError as error:
            self.problem(f"could not be loaded: {_first_line(error)}")
            self.is_hung = True  # its error page may still arrive: the next page starts anew
            return False
        if not self.plan.may_visit(self.page.url):
            if urlsplit(self.page.url).scheme in ("http", "https"):
                self.problem(f"redirected off the site to {origin_of(self.page.url)}: not scanned")
            # else Chromium's error page for a navigation _route refused
            self.is_hung = True
            return False
        self.settle()
        return True

    def settle(self) -> None:
        try:
            seconds = max(min(SETTLE_SECONDS, self.remaining()), 0.1)
            self.page.wait_for_load_state("networkidle", timeout=seconds * 1000)
        except PlaywrightError:
            pass  # still busy: collect what is there

    def find_service(self) -> None:
        if self.seen.service_origin is None:
            found = self.evaluate(self.page, WIDGET_ORIGIN)
            self.seen.service_origin = found["origin"] if found else None

    def choose(self, labels: list[str]) -> bool:
        """Click the banner's button with one of these names, as a visitor would."""
        name = re.compile("^(" + "|".join(re.escape(label) for label in labels) + ")$")
        button = self.page.get_by_role("dialog").get_by_role("button", name=name).first
        try:
            button.click(timeout=max(min(BANNER_SECONDS, self.remaining()), 1) * 1000)
        except PlaywrightError:
            self.problem(f"no banner button {' / '.join(labels)!r} to click")
            return False
        self.settle()
        return True

    def collect(self) -> None:
        now = time.time()
        try:
            cookies = self.context.cookies()
        except PlaywrightError as error:
            self.problem(f"cookies could not be read: {_first_line(error)}")
            cookies = []
        for cookie in cookies:
            key = (cookie["name"], cookie["domain"], cookie["path"])
            if key in self.known_cookies:
                continue
            self.known_cookies.add(key)
            expires = cookie.get("expires", -1)
            self.seen.cookies.append(
                CookieSeen(
                    pass_name=self.name,
                    page=self.page_url,
                    name=cookie["name"],
                    domain=cookie["domain"],
                    path=cookie["path"],
                    lifetime_seconds=round(expires - now) if expires and expires > 0 else None,
                    secure=cookie.get("secure", False),
                    http_only=cookie.get("httpOnly", False),
                    same_site=cookie.get("sameSite", ""),
                    is_third_party=not self.plan.is_site_host(cookie["domain"]),
                    set_by=self.set_by.get(cookie["name"]),
                )
            )
        for frame in self.page.frames:
            found = self.evaluate(frame, STORAGE_KEYS)
            if not found or found["origin"] in ("null", ""):
                continue
            for kind in ("localStorage", "sessionStorage", "indexedDB"):
                for name in found[kind]:
                    key = (found["origin"], kind, name)
                    if key not in self.known_storage:
                        self.known_storage.add(key)
                        self.seen.storage.append(
                            StorageSeen(self.name, self.page_url, found["origin"], kind, name)
                        )

    def links(self) -> list[str]:
        hrefs = self.evaluate(self.page, LINKS) or []
        return [urldefrag(href)[0] for href in hrefs]

    def evaluate(self, target, expression: str):
        """Run a question in a page or frame, bounded; None if it cannot answer in time.

        ``evaluate`` would wait for ever on a page whose scripts never yield;
        ``wait_for_function`` keeps its timeout outside the page.
        """
        if self.is_hung:
            return None
        try:
            answer = target.wait_for_function(expression, timeout=EVALUATE_SECONDS * 1000)
            return answer.json_value()
        except PlaywrightTimeout:
            self.is_hung = True
            self.problem("stopped responding (a script keeps it busy): not read further")
        except PlaywrightError:
            pass  # a frame that went away or never ran
        return None

    def recover(self) -> None:
        """Leave a page that stopped responding or failed for a new one (the profile stays)."""
        if self.is_hung:
            try:
                self.page.close()
            except PlaywrightError:
                pass
            self.page = self._open_page()
            self.is_hung = False

    def close(self) -> None:
        self.seen.requests.extend(self.requests.values())
        try:
            self.context.close()
        except PlaywrightError:
            pass


def crawl(plan: ScanPlan, progress: Progress | None = None) -> Observations:
    """Run the three passes over the site's pages and return what they saw."""
    seen = Observations()
    deadline = time.monotonic() + plan.time_limit
    report = progress or (lambda pass_name, url, total: None)
    try:
        with sync_playwright() as playwright:
            try:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            except PlaywrightError as error:
                raise ScanError(
                    f"Chromium ({CHROMIUM}) could not be started: {_first_line(error)}"
                ) from None
            try:
                seen.pages = _discover(browser, plan, seen, deadline, report)
                for name in PASSES[1:]:
                    _choice_pass(browser, plan, name, seen, deadline, report)
            finally:
                browser.close()
    except PlaywrightError as error:
        raise ScanError(f"the browser stopped: {_first_line(error)}") from None
    return seen


def _discover(browser, plan, seen, deadline, report) -> list[str]:
    """The first pass: no choice, breadth-first over same-site links."""
    visit = _Pass(browser, plan, "before", seen, deadline)
    queue = [urldefrag(url)[0] for url in plan.start_urls]
    pages: list[str] = []
    queued = set(queue)
    try:
        while queue and len(pages) < plan.max_pages:
            if visit.remaining() <= 0:
                visit.problem(f"time limit of {plan.time_limit:.0f} s reached: pages left out")
                break
            url = queue.pop(0)
            report("before", url, 3 * min(plan.max_pages, len(pages) + len(queue) + 1))
            if not visit.visit(url):
                continue
            pages.append(url)
            visit.find_service()
            visit.collect()
            for link in visit.links():
                if link not in queued and plan.may_visit(link):
                    queued.add(link)
                    queue.append(link)
    finally:
        visit.close()
    return pages


def _choice_pass(browser, plan, name, seen, deadline, report) -> None:
    """A pass that clicks "Reject all" or "Accept all" on the first page, then visits all."""
    labels = plan.reject_labels if name == "reject" else plan.accept_labels
    visit = _Pass(browser, plan, name, seen, deadline)
    try:
        for index, url in enumerate(seen.pages):
            if visit.remaining() <= 0:
                visit.problem(f"time limit of {plan.time_limit:.0f} s reached: pages left out")
                break
            report(name, url, 3 * len(seen.pages))
            if not visit.visit(url):
                continue
            if index == 0:
                if not visit.choose(labels):
                    break  # without a choice this pass would only repeat the first
            visit.collect()
    finally:
        visit.close()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
