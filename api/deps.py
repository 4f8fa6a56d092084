"""FastAPI dependencies: the catalogue's engine, the response cache, the job sender, the write-access check.

The app's state holds them (api.app.create_app sets them; tests override them through create_app's
arguments or `app.dependency_overrides`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from api.cache import ResponseCache
from api.errors import ApiError
from atlas.spec.config import Settings

# Send a job id to the workers' queue: (job_id, queue) -> task id. Default: workers.enqueue.send_job.
Sender = Callable[[int, str], str]


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_cache(request: Request) -> ResponseCache:
    cache: ResponseCache = request.app.state.cache
    return cache


def app_sender(app: FastAPI) -> Sender:
    sender: Sender | None = app.state.sender
    if sender is None:
        from workers.enqueue import send_job  # the Celery app: no torch, no task code

        sender = send_job
    return sender


async def get_sender(request: Request) -> Sender:
    return app_sender(request.app)


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
SenderDep = Annotated[Sender, Depends(get_sender)]

bearer = HTTPBearer(
    auto_error=False,
    description="The server's ATLAS_API_TOKEN, as `Authorization: Bearer <token>`; needed to write.",
)

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def write_refusal(settings: Settings, token: str | None) -> ApiError | None:
    """Why a write with this bearer token (None: no bearer token) is refused, or None when it is not.
    Compared in constant time; never logged or echoed. api.guard checks it before a body is read."""
    expected = settings.api_token
    if not expected:
        return ApiError(
            403, "this server accepts no writes: it was started without ATLAS_API_TOKEN set", UNAUTHORIZED
        )
    if not token:
        return ApiError(401, "writes need a bearer token: send `Authorization: Bearer <token>`", UNAUTHORIZED)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return ApiError(401, "the bearer token is not this server's ATLAS_API_TOKEN", UNAUTHORIZED)
    return None


async def require_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Writes need the server's token (declared per route, so the OpenAPI document shows it)."""
    refusal = write_refusal(settings, credentials.credentials if credentials else None)
    if refusal is not None:
        raise refusal


WriteAccess = Depends(require_token)
