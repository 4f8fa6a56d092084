"""The interactive API docs, served offline: Swagger UI at /docs, its script, style and icon from the
`fastapi-offline` package's static files under /docs/assets (FastAPI's defaults load them from a CDN).
Swagger UI's validator badge, an image from an outside host, is off. There is no /redoc: ReDoc's standalone
bundle still loads its logo from an outside host."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

from api.static_files import PackageFiles

ASSETS = "/docs/assets"


def assets_folder() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Create the app with `docs_url=None, redoc_url=None`, then add these."""
    title, openapi = app.title, app.openapi_url or "/openapi.json"
    redirect = "/docs/oauth2-redirect"
    app.mount(ASSETS, PackageFiles(directory=assets_folder()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
