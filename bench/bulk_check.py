"""Before a send: server time to answer a bulk check of 10,000 emails.

    python bench/bulk_check.py [--emails 10000] [--known 5000] [--runs 7]

Records opt-ins for ``--known`` of the addresses (a mix of granted and withdrawn),
then times POST /v1/server/bulk-check for the whole list in-process (the server's
time: parsing, HMAC per address, the queries, the answer). Goal: under 1 s.
"""

from __future__ import annotations

import argparse
import time

from serving import app_for, database, median, print_table
from sqlalchemy import select

from consent.db import db
from consent.keys import issue_key
from consent.ledger import record_decision
from consent.models import Site
from consent.subjects import find_or_create_subject_by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--known", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--databases", default="sqlite,postgresql")
    options = parser.parse_args()
    emails = [f"reader{i}@example.com" for i in range(options.emails)]
    rows = []
    for kind in options.databases.split(","):
        with database(kind) as url:
            app = app_for(url)
            app.config["MAX_CONTENT_LENGTH"] = None
            with app.app_context():
                site = db.session.scalars(select(Site)).one()
                for index, email in enumerate(emails[: options.known]):
                    subject = find_or_create_subject_by(site, "email", email)
                    record_decision(
                        site,
                        subject,
                        [{"purpose": "email_marketing", "granted": index % 4 != 0}],
                        source="api",
                    )
                _, secret = issue_key(site, "bench", ["read"])
                db.session.commit()
            client = app.test_client()
            headers = {"Authorization": f"Bearer {secret}"}
            body = {"purpose": "email_marketing", "emails": emails}
            timings = []
            for _ in range(options.runs):
                started = time.perf_counter()
                response = client.post("/v1/server/bulk-check", json=body, headers=headers)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.json
            allowed = response.json["allowed_count"]
            rows.append(
                [
                    kind,
                    f"{options.emails:,}",
                    f"{options.known:,}",
                    f"{allowed:,}",
                    f"{median(timings) * 1000:.0f}",
                    f"{min(timings) * 1000:.0f}",
                ]
            )
            with app.app_context():
                db.engine.dispose()
    print()
    print_table(["database", "emails", "known", "allowed", "median ms", "best ms"], rows)


if __name__ == "__main__":
    main()
