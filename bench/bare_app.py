"""The baseline: a bare Flask route returning a constant JSON body, nothing else."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def constant():
    return {"allowed": False, "purpose": "analytics", "reason": "no_decision"}
