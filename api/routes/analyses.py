"""Relation-level analyses (hallucinations, in-context learning, logit lens): keyset pages of the stored
ones, one in full, one relation's, and queueing one (bearer token; a worker computes it, atlas.tasks.analysis,
as `atlas analyze ...` does inline). Never computed here (no torch)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.deps import EngineDep, SenderDep, SettingsDep, WriteAccess
from api.errors import ERROR_RESPONSES, ApiError
from api.routes.common import check_model, check_relation
from api.routes.submit import QUEUE_RESPONSES, submission_errors
from api.schemas import (
    MAX_PAGE,
    AnalysisDetail,
    AnalysisKind,
    AnalysisPage,
    AnalysisRequestIn,
    AnalysisSubmissionView,
    AnalysisSummary,
    Id,
    Name,
    RelationAnalyses,
    RelationName,
)
from atlas.db import CatalogueError
from atlas.db.analyses import get_analysis, list_analyses
from atlas.db.jobs import get_job
from atlas.spec.json_safe import finite
from atlas.tasks.analysis import AnalysisRequest
from workers.enqueue import submit_and_send

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


@router.post(
    "/analyses",
    response_model=AnalysisSubmissionView,
    status_code=201,
    summary="Schedule an analysis",
    dependencies=[WriteAccess],
    responses={
        **QUEUE_RESPONSES,
        200: {
            "model": AnalysisSubmissionView,
            "description": "The analysis is stored, or an identical job is active.",
        },
    },
)
def schedule(
    engine: EngineDep, sender: SenderDep, settings: SettingsDep, body: AnalysisRequestIn
) -> JSONResponse:
    """The `kind` analysis (hallucination, icl, lens) of a catalogued `relation` in `model`, with `params`.
    201 and the new job (its `analysis_ids` name the stored analysis once it is done); 200 and the stored
    analysis when this exact one is in the catalogue, or the job when an identical one is queued or running.
    404 for an unknown relation (or lens circuit), 422 naming the field for bad input (`body.params.k`)."""
    request = AnalysisRequest(body.model, body.relation, body.kind, body.params)
    with submission_errors():
        submission = submit_and_send(engine, request, body.queue, sender, settings)
    if submission.job_id is None:
        analysis = get_analysis(engine, submission.found["analysis_id"])
        stored = {k: v for k, v in analysis.items() if k in AnalysisSummary.model_fields}
        message = "this exact analysis is already in the catalogue"
        return JSONResponse(finite({"created": False, "message": message, "job": None, "analysis": stored}))
    result = {
        "created": submission.created,
        "message": "analysis job queued"
        if submission.created
        else "an identical analysis job is already queued or running",
        "job": get_job(engine, submission.job_id),
        "analysis": None,
    }
    headers = {"Location": f"/jobs/{submission.job_id}"}
    return JSONResponse(finite(result), status_code=201 if submission.created else 200, headers=headers)
