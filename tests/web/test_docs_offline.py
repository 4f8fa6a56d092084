"""The interactive API docs in a real headless browser with every request to another host blocked: Swagger
UI at /docs draws one operation block per operation of the OpenAPI document, with no request leaving the
server and no console error."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from web_helpers import Site


def _block_outside(page: Any, base: str) -> list[str]:
    """Abort every request not to the test server; the URLs of those attempted."""
    host = urlsplit(base).netloc
    outside: list[str] = []

    def handle(route: Any) -> None:
        url = route.request.url
        if url.startswith("data:") or urlsplit(url).netloc == host:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", handle)
    return outside


def test_swagger_ui_renders_every_operation_offline(site: Site, page: Any, screenshots: Path) -> None:
    outside = _block_outside(page, site.base)
    document = site.get("/openapi.json")
    operations = sum(
        1
        for item in document["paths"].values()
        for method in item
        if method in ("get", "post", "put", "delete")
    )
    page.goto(f"{site.base}/docs")
    page.wait_for_selector(".opblock")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {operations}")
    assert page.locator(".opblock").count() == operations
    assert page.locator(".info .title").inner_text().startswith("Circuit Atlas")
    page.screenshot(path=screenshots / "docs.png")
    assert outside == []
