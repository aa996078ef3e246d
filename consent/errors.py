"""Domain errors the API turns into one JSON shape."""

from __future__ import annotations


class InvalidRequest(Exception):
    """The request is well-formed but its content is refused (422)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Conflict(Exception):
    """The request conflicts with what is already recorded (409)."""
