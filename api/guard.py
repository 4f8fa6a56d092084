"""What every request passes before a route sees it: a write (any method but GET, HEAD and OPTIONS) needs
the server's token, checked before its body is read; a body may not be larger than ATLAS_MAX_BODY_BYTES,
refused at once when its declared length is larger and as soon as that many bytes have come when it is
chunked, so an oversized body is never read whole or held in memory. A pure ASGI middleware: Starlette's
request object would buffer the body."""

from __future__ import annotations

from fastapi.security.utils import get_authorization_scheme_param
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import write_refusal
from api.errors import body
from atlas.spec.config import Settings

READS = frozenset({"GET", "HEAD", "OPTIONS"})


def too_large(limit: int) -> str:
    return f"the request body is larger than this server's limit of {limit} bytes (ATLAS_MAX_BODY_BYTES)"


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] not in READS:
            scheme, token = get_authorization_scheme_param(headers.get("authorization"))
            refusal = write_refusal(self.settings, token if scheme.lower() == "bearer" else None)
            if refusal is not None:
                await body(refusal.status, refusal.message, headers=refusal.headers)(scope, receive, send)
                return
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            await body(400, "the Content-Length header is not a number")(scope, receive, send)
            return
        if declared is not None and int(declared) > limit:
            await body(413, too_large(limit))(scope, receive, send)
            return
        await self.app(scope, _bounded(receive, limit), send)


def _bounded(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body once it passes `limit` bytes: the route's read of it raises a 413."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, too_large(limit))
        return message

    return bounded
