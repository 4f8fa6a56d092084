"""Jobs in the catalogue, whatever their kind: record (deduplicated), claim, report progress, finish, cancel,
read. What a job of each kind asks, and how it is validated and run, is atlas.tasks.

A job row is the single source of truth for queued work: the queue only carries its id. Workers claim a job
with one conditional UPDATE, so a message delivered twice (a redelivery after a lost worker, a retry) never
runs the job twice at once, and a job whose worker died (its heartbeat stale) is taken over by the next
delivery. Nothing here imports torch: the API submits and reads jobs without the model stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, CursorResult, Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atlas.db import CatalogueError
from atlas.db.models import Job, Model, Relation
from atlas.db.store import default_code_version, find_circuit, transaction
from atlas.spec.errors import Conflict, Invalid, NotFound
from atlas.spec.params import DiscoveryParams

QUEUES = ("cpu", "gpu")
ACTIVE = ("queued", "running")
Claim = Literal["claimed", "finished", "busy"]


class JobError(CatalogueError):
    """A job cannot be submitted or changed as asked; nothing was queued or changed."""


class UnknownForJob(JobError, NotFound):
    """The job, or a relation a job asks for, is not in the catalogue."""


class JobConflict(JobError, Conflict):
    """The job is not in a state that allows the change (cancelling a finished job)."""


class InvalidJob(JobError, Invalid):
    """A bad value in a job request; `field` names it (`relations`, `queue`, `params.top_n`)."""


def now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def check_queue(queue: str) -> None:
    if queue not in QUEUES:
        raise InvalidJob(f"queue must be one of {', '.join(QUEUES)}, got {queue!r}", field="queue")


def check_relations(session: Session, names: Sequence[str]) -> None:
    """Every relation a job names must be catalogued (UnknownForJob naming the missing ones)."""
    known = set(session.scalars(select(Relation.name).where(Relation.name.in_(names))))
    missing = [name for name in names if name not in known]
    if missing:
        raise UnknownForJob(
            f"unknown relation {', '.join(map(repr, missing))}: import it first (`atlas corpus import PATH`)"
        )


class ModelUnavailable(JobError):
    """A job's model is neither in the catalogue nor loadable here (atlas.spec.model_names)."""

    field = "model"


def check_model(target: Engine | Session, name: str) -> None:
    """A job's model must be catalogued or loadable here, so that a job for a model that cannot be had is
    refused before it is queued (not failed by a worker after a wait on the network). Torch-free."""
    from atlas.spec.model_names import BUILT_IN, unavailable

    with transaction(target) as session:
        catalogued = list(session.scalars(select(Model.name).distinct().order_by(Model.name)))
    if name in catalogued or name in BUILT_IN:
        return
    reason = unavailable(name)
    if reason is not None:
        listed = ", ".join(catalogued[:20]) + (", ..." if len(catalogued) > 20 else "") or "none"
        raise ModelUnavailable(
            f"model {name!r} cannot be loaded here: {reason} (catalogued models: {listed}; "
            f"built in: {', '.join(BUILT_IN)})"
        )


def existing_circuits(
    target: Engine | Session, model: str, relations: Sequence[str], params: DiscoveryParams
) -> dict[str, int]:
    """The stored circuit of each catalogued relation whose exact run is already in the catalogue (a model's
    runs are looked up by name; the corpus hash is the relation's stored content hash)."""
    found: dict[str, int] = {}
    version = default_code_version()
    with transaction(target) as session:
        query = select(Relation.name, Relation.content_sha256).where(Relation.name.in_(relations))
        hashes = dict(session.execute(query).tuples().all())
        for name in relations:
            if name not in hashes:
                continue
            circuit = find_circuit(session, model, name, params, hashes[name], version)
            if circuit is not None:
                found[name] = circuit
    return found


def active_job(session: Session, key: str) -> int | None:
    """The id of a queued or running job with this request key, if any."""
    return session.scalar(
        select(Job.id).where(Job.request_key == key, Job.status.in_(ACTIVE)).order_by(Job.id).limit(1)
    )


class DuplicateJob(JobError):
    """An identical job is already queued or running (the database's unique index refused a second)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"an identical job is already queued or running: job {job_id}")
        self.job_id = job_id


def insert_job(
    session: Session,
    kind: str,
    model: str,
    request: dict[str, Any],
    key: str,
    queue: str,
    relations_total: int,
) -> int:
    """Record a validated job as queued (in the caller's transaction); its id. DuplicateJob names the
    active job with this key when there is one: the check before the insert can race with a concurrent
    submission, so the database's unique index over active jobs' keys decides."""
    check_queue(queue)
    for _ in range(3):
        active = active_job(session, key)
        if active is not None:
            raise DuplicateJob(active)
        job = Job(
            kind=kind,
            queue=queue,
            model_name=model,
            request=request,
            request_key=key,
            status="queued",
            relations_total=relations_total,
            relations_done=0,
            facts_done=0,
            facts_total=0,
            circuit_ids=[],
            edit_ids=[],
            analysis_ids=[],
            attempts=0,
        )
        try:
            with session.begin_nested():  # on PostgreSQL this waits for a concurrent insert to commit
                session.add(job)
        except IntegrityError:
            continue  # a concurrent submission won: find its job (or, if it already ended, insert again)
        return job.id
    raise JobError("identical jobs are being submitted and finished concurrently; try again")


def _job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownForJob(f"no job with id {job_id}")
    return job


def claim_job(target: Engine, job_id: int, worker: str, stale_after: float) -> Claim:
    """Take a job for this worker: "claimed" (it is ours now; a queued job, or a running one whose
    heartbeat is older than `stale_after` seconds: its worker died), "finished" (done, failed or
    cancelled: nothing to do) or "busy" (another live worker runs it)."""
    moment = now()
    with transaction(target, write=True) as session:
        claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job)
            .where(
                Job.id == job_id,
                (Job.status == "queued")
                | ((Job.status == "running") & (Job.heartbeat_at < moment - timedelta(seconds=stale_after))),
            )
            .values(
                status="running",
                worker=worker,
                attempts=Job.attempts + 1,
                started_at=moment,
                heartbeat_at=moment,
                error=None,
            )
        )
        if claimed.rowcount:
            return "claimed"
        status = _job(session, job_id).status
    return "busy" if status == "running" else "finished"


def _update_own(target: Engine, job_id: int, worker: str, **values: Any) -> bool:
    """Update a job this worker holds; False when it no longer holds it (taken over after a stall)."""
    with transaction(target, write=True) as session:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job)
            .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
            .values(heartbeat_at=now(), **values)
        )
        return bool(result.rowcount)


def heartbeat(target: Engine, job_id: int, worker: str) -> bool:
    return _update_own(target, job_id, worker)


def report_progress(
    target: Engine,
    job_id: int,
    worker: str,
    *,
    relation: str,
    relations_done: int,
    facts_done: int | None = None,
    facts_total: int | None = None,
    circuit_ids: list[int] | None = None,
    edit_ids: list[int] | None = None,
    analysis_ids: list[int] | None = None,
) -> bool:
    """Record progress (None leaves a field as it is) and beat the heart; False when the job is no longer
    this worker's."""
    given = {
        "facts_done": facts_done,
        "facts_total": facts_total,
        "circuit_ids": circuit_ids,
        "edit_ids": edit_ids,
        "analysis_ids": analysis_ids,
    }
    values = {
        "current_relation": relation,
        "relations_done": relations_done,
        **{k: v for k, v in given.items() if v is not None},
    }
    return _update_own(target, job_id, worker, **values)


def finish_job(
    target: Engine,
    job_id: int,
    worker: str,
    *,
    circuit_ids: list[int] | None = None,
    edit_ids: list[int] | None = None,
    analysis_ids: list[int] | None = None,
    error: str | None = None,
    work_seconds: float | None = None,
) -> bool:
    """Mark a held job done (with its circuits, edits and analyses) or failed (with the error's message)."""
    values: dict[str, Any] = {"status": "failed" if error else "done", "finished_at": now()}
    for column, ids in (("circuit_ids", circuit_ids), ("edit_ids", edit_ids), ("analysis_ids", analysis_ids)):
        if ids is not None:
            values[column] = ids
    if error:
        values["error"] = error
    if work_seconds is not None:
        values["work_seconds"] = work_seconds
    if not error:
        values["current_relation"] = None
    return _update_own(target, job_id, worker, **values)


def release_job(target: Engine, job_id: int, worker: str) -> bool:
    """Give a held job back to the queue (a transient failure: the retry claims it again at once)."""
    return _update_own(target, job_id, worker, status="queued")


def abandon_job(target: Engine | Session, job_id: int, error: str) -> None:
    """Fail a queued job that never reached the queue."""
    with transaction(target, write=True) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="failed", error=error, finished_at=now())
        )


def cancel_job(target: Engine | Session, job_id: int, stale_after: float | None = None) -> dict[str, Any]:
    """Cancel a queued job, or (given `stale_after`) a running one whose worker has sent no heartbeat for
    that many seconds: a worker that later receives it does nothing, and one that wakes up finds it is no
    longer its job. A job that is running live or has ended cannot be cancelled."""
    cancellable = Job.status == "queued"
    if stale_after is not None:
        cancellable = cancellable | stale_running(stale_after)
    with transaction(target, write=True) as session:
        changed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job)
            .where(Job.id == job_id, cancellable)
            .values(status="cancelled", finished_at=now())
            .execution_options(synchronize_session=False)
        )
        job = _job(session, job_id)
        if not changed.rowcount:
            stalled = f" or a running one with no heartbeat for {stale_after:g} s" if stale_after else ""
            raise JobConflict(f"job {job_id} is {job.status}; only a queued job{stalled} can be cancelled")
        session.refresh(job)
        return job_view(job)


def stale_running(stale_after: float) -> ColumnElement[bool]:
    """A running job whose worker has sent no heartbeat for `stale_after` seconds (it died, or lost the
    database)."""
    return (Job.status == "running") & (Job.heartbeat_at < now() - timedelta(seconds=stale_after))


def give_up_job(target: Engine | Session, job_id: int, worker: str, error: str) -> bool:
    """Fail a job whose task gave up retrying (queued again by this worker's release, or still held by
    it), with the error stored; False when it is not in that state (another worker took it, it ended)."""
    with transaction(target, write=True) as session:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job)
            .where(
                Job.id == job_id,
                (Job.status == "queued") | ((Job.status == "running") & (Job.worker == worker)),
            )
            .values(status="failed", error=error, finished_at=now())
        )
        return bool(result.rowcount)


# ------------------------------------------------------------------------------------------------ the reaper


@dataclass(frozen=True)
class Orphan:
    """A job that may have no owner: running with a stale heartbeat, or queued and untouched for as long.
    It has none when the broker holds no message for it either (checked by workers.reaper)."""

    id: int
    status: str
    queue: str
    worker: str | None
    requeues: int


def _untouched(stale_after: float) -> ColumnElement[bool]:
    """Queued and not (re)queued for `stale_after` seconds (heartbeat_at holds a release or re-queue time)."""
    moment = now() - timedelta(seconds=stale_after)
    return (Job.status == "queued") & (func.coalesce(Job.heartbeat_at, Job.created_at) < moment)


def orphan_candidates(target: Engine | Session, stale_after: float, limit: int = 100) -> list[Orphan]:
    query = (
        select(Job.id, Job.status, Job.queue, Job.worker, Job.requeues)
        .where(stale_running(stale_after) | _untouched(stale_after))
        .order_by(Job.id)
        .limit(limit)
    )
    with transaction(target) as session:
        return [Orphan(*row) for row in session.execute(query).tuples()]


def requeue_orphan(
    target: Engine | Session, orphan: Orphan, stale_after: float, max_requeues: int
) -> Literal["requeued", "failed", "changed"]:
    """Re-queue an orphan that no message will deliver ("requeued": the caller sends its id), or fail it
    with a note once it has been re-queued `max_requeues` times ("failed"). Conditional on it still being
    the same orphan: "changed" when a worker claimed it or it ended meanwhile (one reaper of many wins)."""
    still = stale_running(stale_after) if orphan.status == "running" else _untouched(stale_after)
    if orphan.requeues >= max_requeues:
        values: dict[str, Any] = {
            "status": "failed",
            "finished_at": now(),
            "error": f"abandoned: re-queued {orphan.requeues} times after its worker stopped "
            f"(last worker {orphan.worker or 'none'}) and no worker finished it; see the workers' logs",
        }
    else:
        values = {"status": "queued", "worker": None, "heartbeat_at": now(), "requeues": Job.requeues + 1}
    with transaction(target, write=True) as session:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job).where(Job.id == orphan.id, Job.requeues == orphan.requeues, still).values(**values)
        )
    if not result.rowcount:
        return "changed"
    return "failed" if orphan.requeues >= max_requeues else "requeued"


def job_view(job: Job) -> dict[str, Any]:
    """The job as plain JSON-able data: what was asked, status and progress, result or error."""

    def stamp(moment: datetime | None) -> str | None:
        aware = _aware(moment)
        return aware.isoformat() if aware else None

    return {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "model": job.model_name,
        "request": job.request,
        "status": job.status,
        "progress": {
            "relations_done": job.relations_done,
            "relations_total": job.relations_total,
            "current_relation": job.current_relation,
            "facts_done": job.facts_done,
            "facts_total": job.facts_total,
        },
        "circuit_ids": list(job.circuit_ids),
        "edit_ids": list(job.edit_ids),
        "analysis_ids": list(job.analysis_ids),
        "error": job.error,
        "attempts": job.attempts,
        "requeues": job.requeues,
        "worker": job.worker,
        "work_seconds": job.work_seconds,
        "created_at": stamp(job.created_at),
        "started_at": stamp(job.started_at),
        "heartbeat_at": stamp(job.heartbeat_at),
        "finished_at": stamp(job.finished_at),
    }


def get_job(target: Engine | Session, job_id: int) -> dict[str, Any]:
    with transaction(target) as session:
        return job_view(_job(session, job_id))


def get_work(target: Engine | Session, job_id: int) -> tuple[str, dict[str, Any]]:
    """A job's kind and its request (kind-specific JSON)."""
    with transaction(target) as session:
        job = _job(session, job_id)
        return job.kind, dict(job.request)


def list_jobs(
    target: Engine | Session, status: str | None = None, after: int | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], int | None]:
    """Jobs newest first (keyset: `after` is the last id of the previous page); the page and the next
    cursor (None on the last page)."""
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        query = query.where(Job.id < after)
    with transaction(target) as session:
        jobs = list(session.scalars(query))
        items = [job_view(job) for job in jobs[:limit]]
    return items, items[-1]["id"] if len(jobs) > limit else None
