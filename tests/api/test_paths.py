"""A path fuzz over every route (API, pages, static files, docs): each path parameter replaced by odd values
that `str.isdigit()` accepts but `int()` refuses (superscripts, circled and non-ASCII digits), NUL bytes and
other control characters, on SQLite and PostgreSQL. No answer is a server error; odd ids are 404 (pages,
static files) or 422 naming the field (the JSON API), always with a body that says what is wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from api_helpers import auth
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount

ODD = (
    "²",  # superscript two: isdigit() True, int() ValueError
    "①",  # circled one
    "٣",  # Arabic-Indic three: int() accepts it
    "१२",  # Devanagari twelve
    "\x00",
    "1\x00",
    "%00",  # a literal percent sign then 00
    "\x7f",
    "\u202e1",  # right-to-left override
    "9" * 40,
    "-1",
    "0",
    "..",
    " 1",
)
PARAM = re.compile(r"\{([^}:]+)(?::path)?\}")


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)  # an included router (its paths carry its prefix)
        yield from _routes(included.routes) if included is not None else [route]


def _paths(client: TestClient) -> list[tuple[str, str]]:
    """(method, path template) of every route, static mount and page."""
    found: list[tuple[str, str]] = []
    for route in _routes(client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            found.append(("GET", route.path + "/{path}"))
        elif isinstance(route, BaseRoute):
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method in ("GET", "POST"):
                    found.append((method, route.path))  # type: ignore[attr-defined]
    return found


def test_every_route_is_covered(client: TestClient) -> None:
    templates = {path for _, path in _paths(client)}
    for expected in (
        "/ui/circuits/{circuit_id}",
        "/ui/edits/{edit_id}",
        "/static/{path}",
        "/circuits/{circuit_id}",
    ):
        assert expected in templates, templates
    assert sum("{" in path for path in templates) >= 10


@pytest.mark.parametrize("value", ODD, ids=[ascii(v) for v in ODD])
def test_odd_path_values_are_never_server_errors(client: TestClient, value: str) -> None:
    seen = 0
    for method, template in _paths(client):
        if not PARAM.search(template):
            continue
        path = PARAM.sub(lambda _: quote(value, safe=""), template)
        response = client.request(method, path, headers=auth(), json={} if method == "POST" else None)
        seen += 1
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        assert response.status_code in (200, 404, 405, 409, 422), (method, path, response.status_code)
        if template.startswith(("/ui/", "/static/")) and value not in ("0", ".."):
            assert response.status_code == 404, (path, response.status_code)
        if response.status_code >= 400:
            text = response.text
            assert text.strip(), (path, "empty error body")
            if "json" in response.headers.get("content-type", ""):
                assert response.json()["message"], (path, text)
    assert seen >= 10


@pytest.mark.parametrize(
    "path", ["/static/%00", "/static/a%00b.js", "/ui/circuits/%C2%B2", "/ui/edits/%C2%B2"]
)
def test_the_reported_paths_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.text[:300]
