"""Stored relation-level analyses (hallucinations, in-context learning, logit lens): keyset pages of them,
one in full, and one relation's. Computed by `atlas analyze ...`; read here, never computed (no torch)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.deps import EngineDep
from api.errors import ERROR_RESPONSES, ApiError
from api.routes.common import check_model, check_relation
from api.schemas import (
    MAX_PAGE,
    AnalysisDetail,
    AnalysisKind,
    AnalysisPage,
    Id,
    Name,
    RelationAnalyses,
    RelationName,
)
from atlas.db import CatalogueError
from atlas.db.analyses import get_analysis, list_analyses

router = APIRouter(tags=["analyses"], responses=ERROR_RESPONSES)

After = Annotated[Id | None, Query(description="The previous page's `next`.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page.")]
Kind = Annotated[AnalysisKind | None, Query(description="Only analyses of this kind.")]


@router.get("/analyses", response_model=AnalysisPage, summary="Stored analyses")
def analyses(
    engine: EngineDep,
    model: Annotated[Name | None, Query(description="A catalogued model's name.")] = None,
    relation: Annotated[RelationName | None, Query(description="A catalogued relation's name.")] = None,
    kind: Kind = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Hallucination, ICL and lens analyses by id, with their parameters and headline numbers."""
    check_model(engine, model)
    check_relation(engine, relation)
    return list_analyses(engine, model, relation, kind, after, limit)


@router.get("/analyses/{analysis_id}", response_model=AnalysisDetail, summary="One analysis in full")
def analysis(engine: EngineDep, analysis_id: Annotated[Id, Path(description="The analysis's id.")]) -> Any:
    try:
        return get_analysis(engine, analysis_id)
    except CatalogueError as error:
        raise ApiError(404, str(error)) from error


@router.get(
    "/relations/{name}/analyses", response_model=RelationAnalyses, summary="A relation's stored analyses"
)
def relation_analyses(
    engine: EngineDep,
    name: Annotated[RelationName, Path(description="The relation's name.")],
    kind: Kind = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """The relation's stored hallucination, ICL and lens analyses (every model's), each in full."""
    check_relation(engine, name)
    page = list_analyses(engine, None, name, kind, after, limit, with_result=True)
    return {"relation": name, **page}
