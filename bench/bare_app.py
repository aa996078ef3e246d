"""The baselines: a bare Flask route returning a constant JSON body, nothing else;
and one that also makes a single ``SELECT 1`` round trip to the database named in
``CONSENT_DATABASE_URL`` (the floor under any endpoint that reads the database).
"""

import os

from flask import Flask
from sqlalchemy import create_engine, text

app = Flask(__name__)
_url = os.environ.get("CONSENT_DATABASE_URL", "")
engine = (
    create_engine(
        _url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    if _url
    else None
)


@app.get("/")
def constant():
    return {"allowed": False, "purpose": "analytics", "reason": "no_decision"}


@app.get("/select-1")
def select_one():
    with engine.connect() as connection:
        connection.execute(text("SELECT 1")).scalar_one()
    return {"allowed": False, "purpose": "analytics", "reason": "no_decision"}
