"""Run a scan the admin started in its own process: ``consent scan ... --scan-id N``.

The browser must not run inside a web worker (it would hold the request for minutes and
share the worker's memory), so the scan is the same command a site owner runs, told which
stored scan to fill in. It reaches the database with the app's own settings, passed in its
environment as a production worker gets them; its output goes nowhere (the scan row has
the progress, the findings or the error).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from flask import current_app

from consent.models import Scan
from consent.scan.observations import ScanPlan


def scan_command(scan: Scan, plan: ScanPlan) -> list[str]:
    """The command line that fills in this scan."""
    return [
        sys.executable,
        "-m",
        "consent",
        "scan",
        plan.site_key,
        *plan.start_urls,
        "--pages",
        str(plan.max_pages),
        "--time-limit",
        str(int(plan.time_limit)),
        "--scan-id",
        str(scan.id),
    ]


def start_in_background(scan: Scan, plan: ScanPlan) -> subprocess.Popen:
    """Start the scan's process, detached from this one; call it after the commit."""
    config = current_app.config
    environment = {
        **os.environ,
        "CONSENT_DATABASE_URL": config["SQLALCHEMY_DATABASE_URI"],
        "CONSENT_SECRET_KEY": config["SECRET_KEY"],
        "CONSENT_DATA_KEY": config["DATA_KEY"],
    }
    process = subprocess.Popen(
        scan_command(scan, plan),
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Reap it when it ends, so no finished scan lingers as a zombie process.
    threading.Thread(target=process.wait, name=f"scan-{scan.id}", daemon=True).start()
    return process
