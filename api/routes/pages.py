"""Web pages of the atlas under /ui: server-rendered HTML shells, each loading one small JavaScript module
from /static that fetches the JSON endpoints and draws the page (no CDN, no build step, no template engine).

Pages: the catalogue (/ui), one circuit (/ui/circuits/{id}), recurrence (/ui/recurring), a comparison
(/ui/compare?ids=3&ids=4), a knowledge edit before and after (/ui/edits/{id}) and jobs (/ui/jobs). An unknown
circuit or edit is a 404 page saying so. The edit page reads its edit with atlas.db.edits.get_edit
(the same record GET /edits/{id} returns). Imports no torch."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine, select

from api.schemas import MAX_ID
from atlas.db import CatalogueError
from atlas.db.edits import get_edit
from atlas.db.models import Circuit, Edit, Model, Relation
from atlas.db.store import transaction
from atlas.spec.json_safe import finite

router = APIRouter(prefix="/ui", include_in_schema=False)
ASCII_ID = re.compile(r"[0-9]{1,12}")

NAV = (
    ("/ui", "Catalogue", "catalogue"),
    ("/ui/recurring", "Recurrence", "recurring"),
    ("/ui/compare", "Compare", "compare"),
    ("/ui/jobs", "Jobs", "jobs"),
    ("/docs", "API", "api"),
)


def _json_script(data: Any) -> str:
    """JSON for a <script type="application/json"> block: no `<` that could close the element."""
    text = json.dumps(finite(data), separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(
    title: str,
    script: str,
    section: str,
    data: dict[str, Any] | None = None,
    status_code: int = 200,
    body: str = "",
) -> HTMLResponse:
    """The shell every page shares: navigation, a <main> the page's module fills, the page's data."""
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if key == section else ""}>{label}</a>'
        for href, label, key in NAV
    )
    module = f'<script type="module" src="/static/{script}"></script>' if script else ""
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - Circuit Atlas</title>
<link rel="stylesheet" href="/static/atlas.css">
<link rel="icon" href="data:,">
</head>
<body>
<header><a class="brand" href="/ui">Circuit Atlas</a><nav>{links}</nav></header>
<main id="main" data-page="{section}">{body}</main>
<script type="application/json" id="page-data">{_json_script(data or {})}</script>
{module}
</body>
</html>
"""
    return HTMLResponse(document, status_code=status_code)


def not_found(title: str, message: str, section: str) -> HTMLResponse:
    body = f'<h1>{html.escape(title)}</h1><p class="error" id="page-error">{html.escape(message)}</p>'
    return page(title, "", section, status_code=404, body=body)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _id(text: str) -> int | None:
    """A page's id: ASCII digits only (`str.isdigit` also takes "²" and "①", which `int` refuses)."""
    return int(text) if ASCII_ID.fullmatch(text) and 1 <= int(text) <= MAX_ID else None


# ---------------------------------------------------------------------------------------------- edits


def edit_pairs(engine: Engine) -> list[dict[str, Any]]:
    """Every edit's id with its model and relation, for the catalogue's edit filter."""
    with transaction(engine) as session:
        rows = session.execute(
            select(Edit.id, Model.name, Relation.name)
            .join(Model, Edit.model_id == Model.id)
            .join(Relation, Edit.relation_id == Relation.id)
            .order_by(Edit.id)
        ).all()
    return [{"id": i, "model": m, "relation": r} for i, m, r in rows]


def edit_record(engine: Engine, edit_id: int) -> dict[str, Any] | None:
    """One edit as the edit page draws it (atlas.db.edits.get_edit), or None when there is none."""
    try:
        return finite(get_edit(engine, edit_id))
    except CatalogueError:
        return None


# ---------------------------------------------------------------------------------------------- pages


@router.get("", response_class=HTMLResponse)
def catalogue_page(request: Request) -> HTMLResponse:
    return page("Catalogue", "catalogue.js", "catalogue", {"edits": edit_pairs(_engine(request))})


@router.get("/circuits/{circuit_id}", response_class=HTMLResponse)
def circuit_page(request: Request, circuit_id: str) -> HTMLResponse:
    number = _id(circuit_id)
    if number is not None:
        with transaction(_engine(request)) as session:
            if session.scalar(select(Circuit.id).where(Circuit.id == number)) is None:
                number = None
    if number is None:
        return not_found(
            "Unknown circuit",
            f"There is no circuit with id {circuit_id!r} in the catalogue (the catalogue page lists them).",
            "catalogue",
        )
    return page(f"Circuit {number}", "circuit.js", "circuit", {"id": number})


@router.get("/recurring", response_class=HTMLResponse)
def recurring_page() -> HTMLResponse:
    return page("Recurrence", "recurring.js", "recurring")


@router.get("/compare", response_class=HTMLResponse)
def compare_page() -> HTMLResponse:
    return page("Compare circuits", "compare.js", "compare")


@router.get("/edits/{edit_id}", response_class=HTMLResponse)
def edit_page(request: Request, edit_id: str) -> HTMLResponse:
    number = _id(edit_id)
    record = edit_record(_engine(request), number) if number is not None else None
    if record is None:
        return not_found(
            "Unknown edit",
            f"There is no knowledge edit with id {edit_id!r} in the catalogue.",
            "catalogue",
        )
    return page(f"Edit {number}", "edit.js", "edit", {"edit": record})


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page() -> HTMLResponse:
    return page("Jobs", "jobs.js", "jobs")
