"""Send a job's id to the workers, and submit-then-send for every caller that queues work (the CLI's
`--enqueue`, the API's POST routes): one place where a broker that cannot be reached fails the job just
recorded. Importing this loads neither torch nor the task code."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from atlas.db.jobs import JobError, abandon_job
from atlas.spec.config import Settings, get_settings
from atlas.tasks.base import JobRequest
from atlas.tasks.submit import Submission, submit_job
from workers.app import TASK_RUN_JOB, app
from workers.reaper import Send, revive

log = logging.getLogger(__name__)


class QueueUnavailable(JobError):
    """The broker could not be reached or refused the job: the job just recorded was failed (it would
    otherwise stay queued with no message) and nothing is queued."""


def send_job(job_id: int, queue: str) -> str:
    """Queue the job on `queue` ("cpu" or "gpu"); the Celery task id."""
    result = app.send_task(TASK_RUN_JOB, args=[job_id], queue=queue)
    return str(result.id)


def send_new_job(engine: Engine, job_id: int, queue: str, send: Send = send_job) -> None:
    """Send a just-recorded job's id to the workers. A broker that cannot be reached fails the job and
    raises QueueUnavailable."""
    try:
        send(job_id, queue)
    except Exception as error:  # the broker is down or refuses: kombu and redis raise many kinds
        kind = type(error).__name__
        log.error("job %s: could not be queued: %s: %s", job_id, kind, error)
        abandon_job(engine, job_id, f"could not be queued: {kind}")
        raise QueueUnavailable(
            f"the job queue (broker) is unreachable ({kind}); nothing was queued, try again shortly"
        ) from error


def submit_and_send(
    engine: Engine,
    request: JobRequest,
    queue: str = "cpu",
    send: Send = send_job,
    settings: Settings | None = None,
) -> Submission:
    """Record a job of any kind (validated; what is already stored, or an identical active job, is returned
    instead) and send a new job's id to the workers; an identical job whose worker is gone is re-queued and
    sent again. Bad input raises the request's typed errors; an unreachable broker, QueueUnavailable."""
    submission = submit_job(engine, request, queue)
    if submission.job_id is None:
        return submission
    if submission.created:
        send_new_job(engine, submission.job_id, queue, send)
    else:
        revive(engine, submission.job_id, send, settings or get_settings())
    return submission
