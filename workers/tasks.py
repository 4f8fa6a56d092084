"""Task definitions: thin wrappers that take a job id and call `atlas.tasks.runtime.execute_job`, which runs
the job's kind (atlas.tasks.registry) with the same plain function an inline run uses. Transient failures
(database or broker unreachable) retry with capped exponential backoff, ATLAS_JOB_RETRIES times; then the
task gives up: the job is failed with the error stored when the database answers, and otherwise left to the
reaper (workers.reaper), which re-queues it once the database is back. Real errors fail the job at once with
the message stored (in the job row). Each worker process runs a reaper."""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from atlas.spec.config import Settings, get_settings
from workers.app import TASK_RUN_JOB, app

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _engine() -> Any:
    from atlas.jobs import catalogue_engine

    return catalogue_engine()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _transient() -> tuple[type[BaseException], ...]:
    from atlas.tasks.runtime import transient_errors

    return transient_errors()


def retry_delay(retries: int, settings: Settings) -> float:
    """Seconds before retry number `retries` + 1: doubling from ATLAS_JOB_RETRY_DELAY, capped."""
    return float(min(settings.job_retry_delay_max, settings.job_retry_delay * 2**retries))


def heartbeat_interval(settings: Settings) -> float:
    """Beat often enough that a live job never looks stale: three beats per stale period, at most 10 s."""
    return min(10.0, settings.job_stale_seconds / 3)


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    text = str(cause).strip() or type(cause).__name__
    return f"{type(cause).__name__}: {text.splitlines()[0]}"


def give_up(job_id: int, retries: int, error: BaseException) -> str:
    """After the last retry: fail the job with the error stored, if the database answers; else leave it to
    the reaper. The task then ends normally, so its message is acknowledged either way."""
    from atlas.db.jobs import give_up_job

    message = f"gave up after {retries} retries over transient errors: {_first_line(error)}"
    log.error("job %s: giving up after %d retries: %s", job_id, retries, _first_line(error))
    try:
        failed = give_up_job(_engine(), job_id, worker_name(), message)
    except _transient() as still:
        log.error(
            "job %s: its failure could not be stored (%s); the reaper re-queues it once the database is back",
            job_id,
            _first_line(still),
        )
        return "gave up"
    return "failed" if failed else "gave up"


@app.task(bind=True, name=TASK_RUN_JOB, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job(self: Task, job_id: int) -> str:
    from atlas.tasks.runtime import execute_job

    settings = get_settings()
    started = time.perf_counter()
    try:
        outcome = execute_job(
            _engine(),
            job_id,
            worker_name(),
            stale_after=settings.job_stale_seconds,
            heartbeat_every=heartbeat_interval(settings),
        )
    except _transient() as error:
        retries = self.request.retries
        if retries >= settings.job_retries:
            return give_up(job_id, retries, error)
        delay = retry_delay(retries, settings)
        log.warning("job %s: transient error, retry %d in %g s: %s", job_id, retries + 1, delay, error)
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
        outcome.error or outcome.stored,
        time.perf_counter() - started,
        outcome.work_seconds,
    )
    return outcome.status


@worker_process_init.connect
def _start_reaper(**_: Any) -> None:
    """Each worker process (after the fork) runs a reaper with its own engine."""
    from workers.enqueue import send_job
    from workers.reaper import start_reaper

    start_reaper(_engine, send_job, get_settings())


def default_queues() -> str:
    """Both queues on a machine with an NVIDIA GPU, else the CPU queue. Checked without torch: CUDA must not
    be initialized in the parent before the pool forks."""
    from pathlib import Path

    return "gpu,cpu" if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists() else "cpu"
