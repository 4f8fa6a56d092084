"""Send a job's id to the workers. Importing this loads neither torch nor the task code."""

from __future__ import annotations

from sqlalchemy import Engine

from atlas.config import get_settings
from atlas.db.jobs import DiscoveryRequest, JobError, Submission, abandon_job, submit_job
from workers.app import TASK_RUN_JOB, app


def send_job(job_id: int, queue: str) -> str:
    """Queue the job on `queue` ("cpu" or "gpu"); the Celery task id."""
    result = app.send_task(TASK_RUN_JOB, args=[job_id], queue=queue)
    return str(result.id)


def send_new_job(engine: Engine, job_id: int, queue: str) -> None:
    """Send a just-recorded job's id to the workers. A broker that cannot be reached fails the job (it would
    otherwise stay queued forever) and raises JobError."""
    try:
        send_job(job_id, queue)
    except Exception as error:
        message = f"could not reach the broker to queue job {job_id}: {error}"
        abandon_job(engine, job_id, message)
        raise JobError(message) from error


def submit_and_send(engine: Engine, request: DiscoveryRequest, queue: str = "cpu") -> Submission:
    """Record a discovery job (validated; an identical active job, re-queued if its worker is gone, or
    already-stored circuits are returned instead) and send its id to the workers."""
    submission = submit_job(engine, request, queue)
    if submission.created and submission.job_id is not None:
        send_new_job(engine, submission.job_id, queue)
    elif submission.job_id is not None:
        from workers.reaper import revive

        revive(
            engine, submission.job_id, send_job, get_settings()
        )  # the identical job, if its worker is gone
    return submission
