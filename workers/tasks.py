"""Task definitions: thin wrappers that take a job id and call `atlas.jobs.execute_job`, the same job
function an inline run uses. Transient failures (database or broker unreachable) retry with backoff, a
bounded number of times; real errors fail the job at once with the message stored (in the job row)."""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from typing import Any

from celery import Task

from atlas.config import get_settings
from workers.app import TASK_RUN_JOB, app

log = logging.getLogger(__name__)
MAX_RETRIES = 5


@lru_cache(maxsize=1)
def _engine() -> Any:
    from atlas.jobs import catalogue_engine

    return catalogue_engine()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _transient() -> tuple[type[BaseException], ...]:
    from atlas.jobs import transient_errors

    return transient_errors()


@app.task(bind=True, name=TASK_RUN_JOB, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job(self: Task, job_id: int) -> str:
    from atlas.jobs import execute_job

    settings = get_settings()
    started = time.perf_counter()
    try:
        outcome = execute_job(_engine(), job_id, worker_name(), stale_after=settings.job_stale_seconds)
    except _transient() as error:
        if self.request.retries >= MAX_RETRIES:
            log.error("job %s: giving up after %d retries: %s", job_id, MAX_RETRIES, error)
            raise
        delay = min(60, 2 ** (self.request.retries + 1))
        log.warning("job %s: transient error, retry in %d s: %s", job_id, delay, error)
        raise self.retry(exc=error, countdown=delay, max_retries=None) from error
    if outcome.status == "busy":
        # Another live worker holds the job (an early redelivery): look again once its heartbeat could
        # have gone stale, so the job still completes if that worker dies.
        raise self.retry(countdown=settings.job_stale_seconds, max_retries=None)
    # The task's own time beside the job function's: their difference is the queue's overhead per job.
    log.info(
        "job %s: %s %s task_seconds=%.3f work_seconds=%.3f",
        job_id,
        outcome.status,
        outcome.error or outcome.circuit_ids,
        time.perf_counter() - started,
        outcome.work_seconds,
    )
    return outcome.status


def default_queues() -> str:
    """Both queues on a machine with an NVIDIA GPU, else the CPU queue. Checked without torch: CUDA must not
    be initialized in the parent before the pool forks."""
    from pathlib import Path

    return "gpu,cpu" if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists() else "cpu"
