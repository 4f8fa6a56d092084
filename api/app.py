"""The app factory: `create_app()` reads settings from ATLAS_* variables (atlas.spec.config), opens the
catalogue (ATLAS_DATABASE_URL, else the embedded SQLite file, created and migrated on first use) and mounts
the routers. OpenAPI at /openapi.json, interactive docs at /docs. Imports no torch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine

from api import access_log, docs, errors
from api.cache import ResponseCache, cache_from_environment
from api.deps import Sender, app_sender
from api.guard import RequestGuard
from api.routes import analyses, catalogue, circuits, components, edits, jobs, pages
from api.static_files import PackageFiles
from atlas.spec.config import Settings, get_settings

STATIC = Path(__file__).resolve().parent / "static"
GZIP_MIN = 1024  # bytes: smaller bodies go as they are (compressing them saves less than it costs)
DESCRIPTION = """Knowledge circuits of language models: which heads and MLPs carry a fact, and whether they
are the same for other facts, relations and models.

Reads are public. Lists are keyset pages: pass a page's `next` as `after` for the next one. Writes (scheduling
and cancelling extraction jobs) need `Authorization: Bearer <ATLAS_API_TOKEN>`. Every error is a JSON body
`{message, errors}`: unknown things are 404, bad parameters 422 naming the field."""


def open_engine(settings: Settings) -> Engine:
    from atlas.db.engine import database_url, make_engine, upgrade

    url = database_url(settings)
    if url.startswith("sqlite"):
        upgrade(url)  # the embedded file is created and migrated on first use; a server database is not
        return make_engine(url)
    return make_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


@asynccontextmanager
async def _reaper(app: FastAPI) -> AsyncIterator[None]:
    """Every API process runs a reaper (workers.reaper) while it serves, where a broker is configured."""
    from workers.reaper import start_reaper

    settings: Settings = app.state.settings
    reaper = start_reaper(
        lambda: app.state.engine, lambda job_id, queue: app_sender(app)(job_id, queue), settings
    )
    try:
        yield
    finally:
        if reaper is not None:
            reaper.stop()


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    sender: Sender | None = None,
    cache: ResponseCache | None = None,
) -> FastAPI:
    """The API. Tests pass their own engine, a fake sender (instead of workers.enqueue.send_job) and
    settings (the token)."""
    settings = settings or get_settings()
    access_log.install()
    app = FastAPI(
        lifespan=_reaper,
        title="Circuit Atlas",
        version="0.1.0",
        docs_url=None,  # served offline by api.docs
        redoc_url=None,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "circuits", "description": "Catalogued circuits, one circuit, re-cuts and exports."},
            {"name": "components", "description": "Heads and MLPs across circuits, relations and models."},
            {"name": "catalogue", "description": "Models, relations and facts."},
            {"name": "jobs", "description": "Extraction jobs: schedule (token), cancel (token), progress."},
            {"name": "edits", "description": "Knowledge edits: schedule (token), outcomes, circuit changes."},
            {"name": "analyses", "description": "Stored hallucination, in-context learning, lens results."},
        ],
    )
    app.state.settings = settings
    app.state.engine = engine if engine is not None else open_engine(settings)
    app.state.sender = sender
    app.state.cache = cache if cache is not None else cache_from_environment()
    errors.install(app)
    docs.install(app)
    app.add_middleware(RequestGuard, settings=settings)  # the token, then the body's size, before any route
    # Outermost: bodies of GZIP_MIN bytes and more are gzipped for a client that accepts it (level 6: about
    # the size of level 9 for JSON at a fraction of the CPU).
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN, compresslevel=6)
    for router in (
        circuits.router,
        components.router,
        catalogue.router,
        jobs.router,
        edits.router,
        analyses.router,
        pages.router,
    ):
        app.include_router(router)
    app.mount("/static", PackageFiles(directory=STATIC), name="static")  # the web pages' JS and CSS

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/health", tags=["catalogue"], summary="Liveness and database reachability")
    def health() -> dict[str, Any]:
        from atlas.db.browse import catalogue_version

        count = catalogue_version(app.state.engine)[0]
        return {"status": "ok", "circuits": int(count or 0)}

    return app
