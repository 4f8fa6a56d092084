"""FastAPI dependencies: the catalogue's engine, the response cache, the job sender, the write-access check.

The app's state holds them (api.app.create_app sets them; tests override them through create_app's
arguments or `app.dependency_overrides`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from api.cache import ResponseCache
from api.errors import ApiError
from atlas.config import Settings

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


async def get_sender(request: Request) -> Sender:
    sender: Sender | None = request.app.state.sender
    if sender is None:
        from workers.enqueue import send_job  # the Celery app: no torch, no task code

        sender = send_job
    return sender


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
SenderDep = Annotated[Sender, Depends(get_sender)]

bearer = HTTPBearer(
    auto_error=False,
    description="The server's ATLAS_API_TOKEN, as `Authorization: Bearer <token>`; needed to write.",
)

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def require_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Writes need the server's token. Compared in constant time; never logged or echoed."""
    expected = settings.api_token
    if not expected:
        raise ApiError(
            403, "this server accepts no writes: it was started without ATLAS_API_TOKEN set", UNAUTHORIZED
        )
    if credentials is None:
        raise ApiError(401, "writes need a bearer token: send `Authorization: Bearer <token>`", UNAUTHORIZED)
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise ApiError(401, "the bearer token is not this server's ATLAS_API_TOKEN", UNAUTHORIZED)


WriteAccess = Depends(require_token)
