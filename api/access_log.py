"""Secrets never reach the access log: the values of `token`, `access_token`, `api_token` and
`authorization` query parameters are replaced by `[redacted]` in the URLs uvicorn logs (a bearer token
belongs in a header, which is never logged, but clients do put one in a URL)."""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

SECRET_KEYS = frozenset({"token", "access_token", "api_token", "authorization"})
REDACTED = "[redacted]"


def redact(url: str) -> str:
    """The path and query with secret parameters' values replaced; keys compared decoded and case-folded."""
    path, mark, query = url.partition("?")
    if not mark:
        return url
    parts = []
    for part in query.split("&"):
        key, equals, _ = part.partition("=")
        secret = equals and unquote_plus(key).strip().casefold() in SECRET_KEYS
        parts.append(f"{key}={REDACTED}" if secret else part)
    return f"{path}?{'&'.join(parts)}"


class RedactQueryFilter(logging.Filter):
    """For uvicorn's access logger, whose records carry (client, method, path with query, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryFilter) for f in access.filters):
        access.addFilter(RedactQueryFilter())
