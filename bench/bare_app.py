"""The baselines: bare Flask routes doing nothing but the least their kind of answer needs.

- ``GET /``: a constant JSON body;
- ``GET /select-1``: one ``SELECT 1`` round trip to the database named in
  ``CONSENT_DATABASE_URL`` (the floor under any endpoint that reads it);
- ``POST /v1/sites/<site>/records``: the request's JSON inserted as one row, committed
  (the floor under any endpoint that records);
- ``POST /hot/v1/sites/<site>/records``: the same insert after ``SELECT ... FOR UPDATE``
  of the site's one hot row, which is then updated (the floor under a per-site chain).

The write routes use the service's engine settings (``consent.db.configure_engine``:
SQLite's WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``), so a floor costs what the
service's own durability costs; ``create_tables`` makes their tables first.
"""

import json
import os

from flask import Flask, request
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, select, text

from consent.db import configure_engine

app = Flask(__name__)
_url = os.environ.get("CONSENT_DATABASE_URL", "").replace(
    "postgresql://", "postgresql+psycopg://", 1
)
engine = create_engine(_url, isolation_level="AUTOCOMMIT") if _url else None
writer = configure_engine(create_engine(_url)) if _url else None

metadata = MetaData()
rows = Table(
    "bench_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site", String(64), nullable=False),
    Column("body", Text, nullable=False),
)
hot_rows = Table(
    "bench_hot_rows",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("sequence", Integer, nullable=False),
)
ANSWER = {"allowed": False, "purpose": "analytics", "reason": "no_decision"}


def create_tables(url: str, sites: list[str]) -> None:
    """Make the write routes' tables in the database at ``url``, one hot row per site."""
    bench_engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    metadata.create_all(bench_engine)
    with bench_engine.begin() as connection:
        connection.execute(hot_rows.insert(), [{"site": site, "sequence": 0} for site in sites])
    bench_engine.dispose()


@app.get("/")
def constant():
    return ANSWER


@app.get("/select-1")
def select_one():
    with engine.connect() as connection:
        connection.execute(text("SELECT 1")).scalar_one()
    return ANSWER


@app.post("/v1/sites/<site>/records")
def insert_one(site: str):
    body = json.dumps(request.get_json())
    with writer.begin() as connection:
        connection.execute(rows.insert(), {"site": site, "body": body})
    return ANSWER, 201


@app.post("/hot/v1/sites/<site>/records")
def insert_after_hot_row(site: str):
    body = json.dumps(request.get_json())
    with writer.begin() as connection:
        sequence = connection.execute(
            select(hot_rows.c.sequence).where(hot_rows.c.site == site).with_for_update()
        ).scalar_one()
        connection.execute(rows.insert(), {"site": site, "body": body})
        connection.execute(
            hot_rows.update().where(hot_rows.c.site == site).values(sequence=sequence + 1)
        )
    return ANSWER, 201
