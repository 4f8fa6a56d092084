"""Knowledge edits: a page of edits, one edit, the heads and MLPs edits change, a before-vs-after summary
across edits, and scheduling an edit (bearer token; the job is computed by a worker, atlas.edit_jobs)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.deps import EngineDep, SenderDep, SettingsDep, WriteAccess
from api.errors import ERROR_RESPONSES
from api.routes.common import check_model, check_relation
from api.routes.submit import QUEUE_RESPONSES, submission_errors
from api.schemas import (
    MAX_PAGE,
    EditComparison,
    EditComponentCount,
    EditDetail,
    EditMethod,
    EditPage,
    EditRequestIn,
    EditSubmissionView,
    EditSummary,
    Id,
    Name,
    RelationName,
)
from atlas.db.edits import EDIT_DISCOVERY, edit_comparison, edit_component_changes, get_edit, list_edits
from atlas.db.jobs import get_job
from atlas.spec.json_safe import finite
from atlas.tasks.edit import EditJobRequest
from workers.enqueue import submit_and_send

router = APIRouter(prefix="/edits", tags=["edits"], responses=ERROR_RESPONSES)

ModelFilter = Annotated[Name | None, Query(description="A catalogued model's name.")]
MethodFilter = Annotated[EditMethod | None, Query(description="The edit method.")]
LayerFilter = Annotated[int | None, Query(ge=0, le=10_000, description="The edited MLP layer.")]


@router.get("", response_model=EditPage, summary="Knowledge edits")
def edits(
    engine: EngineDep,
    model: ModelFilter = None,
    relation: Annotated[RelationName | None, Query()] = None,
    method: MethodFilter = None,
    layer: LayerFilter = None,
    after: Annotated[Id | None, Query(description="The previous page's `next`.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """Edits by id: what was edited, efficacy, generalization, locality and the circuit change's Jaccard."""
    check_model(engine, model)
    check_relation(engine, relation)
    return finite(list_edits(engine, model, relation, method, layer, after, limit))


@router.get("/components", response_model=list[EditComponentCount], summary="Heads and MLPs edits change")
def components(
    engine: EngineDep,
    model: ModelFilter = None,
    method: MethodFilter = None,
    layer: LayerFilter = None,
    relation: Annotated[RelationName | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Per head and MLP, how many edits' edited-fact circuits gained, lost and kept it, most gained first:
    `?method=rome&layer=4` answers which heads ROME at layer 4 recruits."""
    check_model(engine, model)
    check_relation(engine, relation)
    return edit_component_changes(engine, model, method, layer, relation)


@router.get("/summary", response_model=list[EditComparison], summary="Before vs after across edits")
def summary(
    engine: EngineDep, model: ModelFilter = None, method: MethodFilter = None, layer: LayerFilter = None
) -> list[dict[str, Any]]:
    """Per model, method and layer: mean efficacy, generalization, locality, the new and old objects'
    probabilities before and after, and the circuits' change."""
    check_model(engine, model)
    return finite(edit_comparison(engine, model, method, layer))


@router.get("/{edit_id}", response_model=EditDetail, summary="One knowledge edit")
def edit(engine: EngineDep, edit_id: Annotated[Id, Path(description="The edit's id.")]) -> dict[str, Any]:
    return finite(get_edit(engine, edit_id))


def _request(body_in: EditRequestIn) -> EditJobRequest:
    return EditJobRequest(
        body_in.model,
        body_in.relation,
        body_in.subject,
        body_in.new_object,
        {"method": body_in.method, "layer": body_in.layer, "steps": body_in.steps, "lr": body_in.lr},
        replace(EDIT_DISCOVERY, top_n=body_in.top_n),
        body_in.n_neighbours,
    )


@router.post(
    "",
    response_model=EditSubmissionView,
    status_code=201,
    summary="Schedule a knowledge edit",
    dependencies=[WriteAccess],
    responses={
        **QUEUE_RESPONSES,
        200: {
            "model": EditSubmissionView,
            "description": "The edit is stored, or an identical job is active.",
        },
    },
)
def schedule(
    engine: EngineDep, sender: SenderDep, settings: SettingsDep, body_in: EditRequestIn
) -> JSONResponse:
    """Edit `subject`'s fact of `relation` to `new_object` in a copy of `model` with `method` at `layer`,
    and compare circuits before and after. 201 and the new job; 200 and the stored edit when this exact edit
    is in the catalogue, or the job when an identical one is queued or running. 404 for an unknown relation,
    422 naming the field for bad input (a subject the relation does not hold, a layer outside the model)."""
    with submission_errors():
        submission = submit_and_send(engine, _request(body_in), body_in.queue, sender, settings)
    if submission.job_id is None:
        edit = get_edit(engine, submission.found["edit_id"])
        stored = {k: v for k, v in edit.items() if k in EditSummary.model_fields}
        message = "this exact edit is already in the catalogue"
        return JSONResponse(finite({"created": False, "message": message, "job": None, "edit": stored}))
    result = {
        "created": submission.created,
        "message": "edit job queued"
        if submission.created
        else "an identical edit job is already queued or running",
        "job": get_job(engine, submission.job_id),
        "edit": None,
    }
    headers = {"Location": f"/jobs/{submission.job_id}"}
    return JSONResponse(finite(result), status_code=201 if submission.created else 200, headers=headers)
