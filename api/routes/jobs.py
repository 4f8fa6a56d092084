"""Jobs: schedule an extraction job, cancel a queued one (both behind the bearer token), read status and
progress. A job's row in the catalogue is its state; the queue carries only its id (workers.enqueue)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from api.deps import EngineDep, SenderDep, SettingsDep, WriteAccess
from api.errors import ERROR_RESPONSES, ApiError, status_of
from api.routes.submit import AUTH_RESPONSES, QUEUE_RESPONSES, submission_errors
from api.schemas import (
    MAX_PAGE,
    ErrorBody,
    FactList,
    Id,
    JobPage,
    JobRequest,
    JobStatus,
    JobSubmission,
    JobView,
)
from atlas.db import CatalogueError, queries
from atlas.db.jobs import cancel_job, check_model, get_job, list_jobs
from atlas.db.store import import_relations
from atlas.spec.corpus import Fact as CorpusFact
from atlas.spec.corpus import Relation as CorpusRelation
from atlas.spec.json_safe import finite
from atlas.tasks.discover import DiscoveryRequest
from workers.enqueue import submit_and_send

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERROR_RESPONSES)
JobId = Annotated[Id, Path(description="The job's id.")]


@router.get("", response_model=JobPage, summary="Jobs, newest first")
def jobs(
    engine: EngineDep,
    status: Annotated[JobStatus | None, Query()] = None,
    after: Annotated[Id | None, Query(description="The previous page's `next`.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    items, next_id = list_jobs(engine, status, after, limit)
    return {"items": items, "next": next_id}


@router.get("/{job_id}", response_model=JobView, summary="A job's status and progress")
def job(engine: EngineDep, job_id: JobId) -> dict[str, Any]:
    """What was asked, its status (queued, running, done, failed, cancelled), progress (relations and facts
    done), its circuits when done, or the error when failed."""
    return get_job(engine, job_id)


def _store_fact_list(engine: Engine, facts: FactList) -> str:
    """The fact list as a catalogued relation (found if stored before with the same content)."""
    relation = CorpusRelation(
        name=facts.relation,
        title=facts.title or facts.relation.replace("_", " "),
        category=facts.category,
        domain="",
        range="",
        symmetric=False,
        prompt_templates=(),
        prompt_templates_zs=(facts.template,),
        facts=tuple(dict.fromkeys(CorpusFact(f.subject.strip(), f.object.strip()) for f in facts.facts)),
        source="api",
    )
    try:
        import_relations(engine, [relation])
    except CatalogueError as error:
        raise ApiError(status_of(error), f"body.facts: {error}") from None
    return relation.name


@router.post(
    "",
    response_model=JobSubmission,
    status_code=201,
    summary="Schedule an extraction job",
    dependencies=[WriteAccess],
    responses={
        **QUEUE_RESPONSES,
        200: {"model": JobSubmission, "description": "An identical job, or the stored runs: nothing new."},
        409: {"model": ErrorBody, "description": "The fact list's relation name is taken by other facts."},
    },
)
def schedule(engine: EngineDep, sender: SenderDep, settings: SettingsDep, body: JobRequest) -> JSONResponse:
    """Circuits of `relations` (catalogued relations) or of a fact list in `model`, with `method`, `ig_steps`
    and the selection (`top_n` edges or a `threshold`). Returns 201 and the new job; 200 and the job when an
    identical one is already queued or running (re-queued if its worker has stopped); 200 and no job with
    the stored circuits when every run asked for is already in the catalogue (a duplicate of finished runs
    is not run again)."""
    with submission_errors():
        check_model(engine, body.model.strip())  # before the fact list is stored
    relations = list(body.relations)
    if body.facts is not None:
        name = _store_fact_list(engine, body.facts)
        relations.append(name)
    request = DiscoveryRequest(body.model, tuple(relations), body.params())
    with submission_errors():  # an unknown relation: 404
        submission = submit_and_send(engine, request, body.queue, sender, settings)
    existing: dict[str, int] = submission.found["existing_circuits"]
    circuits = [asdict(c) for c in _summaries(engine, list(existing.values()))]
    if submission.job_id is None:
        result = {
            "created": False,
            "message": "every run asked for is already in the catalogue: these are its circuits",
            "job": None,
            "existing_circuits": existing,
            "circuits": circuits,
        }
        return _json(200, result)
    result = {
        "created": submission.created,
        "message": "job queued" if submission.created else "an identical job is already queued or running",
        "job": get_job(engine, submission.job_id),
        "existing_circuits": existing,
        "circuits": circuits,
    }
    headers = {"Location": f"/jobs/{submission.job_id}"}
    return _json(201 if submission.created else 200, result, headers)


def _summaries(engine: Engine, ids: list[int]) -> list[queries.CircuitSummary]:
    if not ids:
        return []
    found: list[queries.CircuitSummary] = []
    for circuit_id in ids:
        page = queries.list_circuits(engine, after=circuit_id - 1, limit=1)
        found += [c for c in page.items if c.id == circuit_id]
    return found


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(finite(content), status_code=status, headers=headers)


@router.post(
    "/{job_id}/cancel",
    response_model=JobView,
    summary="Cancel a queued (or stalled) job",
    dependencies=[WriteAccess],
    responses={
        **AUTH_RESPONSES,
        409: {"model": ErrorBody, "description": "The job is running live, or has ended."},
    },
)
def cancel(engine: EngineDep, settings: SettingsDep, job_id: JobId) -> dict[str, Any]:
    """A queued job is cancelled (a worker that later receives it does nothing), and so is a running one
    whose worker has sent no heartbeat for ATLAS_JOB_STALE_SECONDS (it died or lost the database); a job
    running live or finished cannot be (409)."""
    return cancel_job(engine, job_id, settings.job_stale_seconds)
