"""Models, relations and facts: keyset pages (`after` the previous page's `next`, `limit` per page)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import EngineDep
from api.errors import ERROR_RESPONSES
from api.schemas import (
    MAX_PAGE,
    Category,
    FactPage,
    Id,
    MethodView,
    ModelPage,
    Name,
    RelationPage,
    RelationView,
)
from atlas.db import browse
from atlas.spec.methods import DEFAULT_METHOD, METHODS

router = APIRouter(tags=["catalogue"], responses=ERROR_RESPONSES)

After = Annotated[Id | None, Query(description="The previous page's `next`.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page.")]


@router.get("/methods", response_model=list[MethodView], summary="Attribution methods")
def list_methods() -> list[dict[str, object]]:
    """The attribution methods discovery can use (the registry atlas.spec.methods), the default first."""
    ordered = sorted(METHODS, key=lambda m: m.name != DEFAULT_METHOD)
    return [
        {
            "name": m.name,
            "takes_steps": m.takes_steps,
            "summary": m.summary,
            "default": m.name == DEFAULT_METHOD,
        }
        for m in ordered
    ]


@router.get("/models", response_model=ModelPage, summary="Catalogued models")
def list_models(engine: EngineDep, after: After = None, limit: Limit = 50) -> dict[str, object]:
    """Every catalogued model (name, architecture, shape, dtype, weights hash) with its number of circuits."""
    return browse.list_models(engine, after, limit)


@router.get("/relations", response_model=RelationPage, summary="Catalogued relations")
def list_relations(
    engine: EngineDep,
    category: Annotated[Category | None, Query()] = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, object]:
    """Relations with their category, prompt templates, number of facts and number of circuits."""
    return browse.list_relations(engine, category, after, limit)


@router.get("/relations/{name}", response_model=RelationView, summary="One relation")
def get_relation(engine: EngineDep, name: Annotated[Name, Path()]) -> dict[str, object]:
    return browse.get_relation(engine, name)


@router.get("/facts", response_model=FactPage, summary="A relation's facts")
def list_facts(
    engine: EngineDep,
    relation: Annotated[Name, Query(description="The relation's name.")],
    after: After = None,
    limit: Limit = 50,
) -> dict[str, object]:
    return browse.list_facts(engine, relation, after, limit)
