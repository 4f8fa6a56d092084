"""The interactive docs work offline: /docs (Swagger UI) loads its script, style and icon from this server,
never from a CDN, and each asset it references is served. /redoc (whose bundle loads a logo from outside)
is not served."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

REFERENCE = re.compile(r"""(?:src|href|url)\s*[=:(]\s*['"]?([^'"\s)>]+)""")


def _references(html: str) -> list[str]:
    return REFERENCE.findall(html)


def test_docs_reference_no_external_host(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    html = response.text
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), re.findall(
        r"(?:https?:)?//[^\s'\"]+", html
    )
    references = [r for r in _references(html) if not r.startswith("data:")]
    assets = [r for r in references if r.startswith("/docs/assets/")]
    assert len(assets) == 3, references
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, (asset, served.status_code)
    assert "/openapi.json" in html


def test_swagger_ui_is_a_version_that_renders_openapi_3_1(client: TestClient) -> None:
    """FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on; the validator badge (an
    image from an outside host) is off."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").text
    versions = {int(v) for v in re.findall(r'"(\d+)\.\d+\.\d+"', bundle) if int(v) < 10}
    assert max(versions) >= 5, versions
    assert '"validatorUrl": null' in client.get("/docs").text


def test_oauth2_redirect_and_unknown_assets(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/docs/assets/nope.js").status_code == 404
    assert client.get("/docs/assets/%00").status_code == 404
    assert client.get("/redoc").status_code == 404
