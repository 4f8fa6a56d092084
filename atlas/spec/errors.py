"""Typed user errors. The CLI turns any of them into one `error:` line and exit status 2; the API picks the
status from the type (NotFound 404, Conflict 409, Invalid 422), never from the message's words."""

from __future__ import annotations


class AtlasError(ValueError):
    """Bad input or a request that cannot be met; the message says what is wrong and how to fix it."""


class Invalid(AtlasError):
    """A value that cannot be used; `field` names it where one value is at fault (`top_n`, `relation`)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(AtlasError):
    """Something asked for by name or id that does not exist."""


class Conflict(AtlasError):
    """A request that contradicts what is already stored or running."""
