"""Recording a job of any kind: validated (alone, then against the catalogue), deduplicated (what is stored
is returned instead; an identical active job is returned instead), and inserted as queued. The caller sends
its id to the workers (workers.enqueue). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from atlas.db.jobs import DuplicateJob, active_job, check_model, check_queue, insert_job
from atlas.db.store import transaction
from atlas.tasks.base import JobRequest
from atlas.tasks.registry import request_class


@dataclass
class Submission:
    """The job that will do the work (new, or an identical one already queued or running), or, when the
    catalogue already holds all that was asked, no job; `found` is what it holds (kind-specific JSON:
    `existing_circuits`, `edit_id`, `analysis_id`) and `text` names it for people."""

    job_id: int | None
    created: bool
    found: dict[str, Any]
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "created": self.created, **self.found}


def submit_job(target: Engine | Session, request: JobRequest, queue: str = "cpu") -> Submission:
    """Validate and record a job (status "queued"); the caller sends its id to the queue. Bad input raises
    the request's typed errors (a kind that is not registered, UnknownJobKind; a model that cannot be had,
    ModelUnavailable) and records nothing."""
    request_class(request.kind)
    request = request.normalized()
    check_queue(queue)
    request.validate()
    key = request.key()
    check_model(target, request.model)  # outside the transaction: it may ask the hub
    with transaction(target, write=True) as session:
        request.validate(session)
        stored = request.stored(session)
        if stored.complete:
            return Submission(None, False, stored.found, stored.text)
        active = active_job(session, key)
        if active is not None:
            return Submission(active, False, stored.found)
        try:
            job_id = insert_job(
                session, request.kind, request.model, request.to_dict(), key, queue, request.relations_total
            )
        except DuplicateJob as duplicate:
            return Submission(duplicate.job_id, False, stored.found)
        return Submission(job_id, True, stored.found)
