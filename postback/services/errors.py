"""Errors the API turns into 4xx answers."""

from __future__ import annotations


class NotFound(Exception):
    """Missing, or another account's: both answer 404 so nothing leaks."""

    def __init__(self, what: str, where: str = "") -> None:
        super().__init__(f"{where}: {what} not found" if where else f"{what} not found")


class Invalid(Exception):
    """Input that passed the schema but breaks a rule; names the field and the fix."""

    def __init__(self, field: str, message: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.extra = extra or {}
