"""Running one queued job on a worker, whatever its kind: claim it, look its kind up in the registry, run its
request with a heartbeat beating, and mark it done or failed (docs/reliability.md says what is promised).
Torch is imported by the kind's work, not here; models are cached per process by `atlas.jobs.cached_model`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from atlas.tasks.base import JobContext, JobLost
from atlas.tasks.registry import request_of

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

# A transient failure: the database or the broker could not be reached. Retried; anything else fails the job.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def transient_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (*TRANSIENT_ERRORS, OperationalError, InterfaceError)


@dataclass
class JobOutcome:
    # "done", "failed", "finished" (nothing to do), "busy" (another worker holds it), "lost" (the work
    # ended but the job was no longer this worker's to finish: taken over or cancelled meanwhile)
    status: str
    circuit_ids: list[int]
    error: str | None = None
    work_seconds: float = 0.0
    edit_ids: list[int] = field(default_factory=list)
    analysis_ids: list[int] = field(default_factory=list)

    @property
    def stored(self) -> dict[str, list[int]]:
        """What the job stored, by kind of result (only the kinds it stored)."""
        ids = {"circuits": self.circuit_ids, "edits": self.edit_ids, "analyses": self.analysis_ids}
        return {name: values for name, values in ids.items() if values}


def _outcome(status: str, context: JobContext, error: str | None = None, seconds: float = 0.0) -> JobOutcome:
    return JobOutcome(status, context.circuit_ids, error, seconds, context.edit_ids, context.analysis_ids)


def _finish(engine: Engine, context: JobContext, started: float, error: str | None = None) -> JobOutcome:
    """Record the job done (or failed with `error`) while this worker still holds it; else it is "lost"."""
    from atlas.db.jobs import finish_job

    seconds = time.perf_counter() - started
    finished = finish_job(
        engine,
        context.job_id,
        context.worker,
        circuit_ids=context.circuit_ids,
        edit_ids=context.edit_ids,
        analysis_ids=context.analysis_ids,
        error=error,
        work_seconds=seconds,
    )
    ending = "failed" if error else "done"
    if not finished:
        log.warning(
            "job %s: %s, but no longer held by %s (taken over or cancelled): not recorded",
            context.job_id,
            ending,
            context.worker,
        )
        return _outcome("lost", context, error, seconds)
    return _outcome(ending, context, error, seconds)


def execute_job(
    engine: Engine, job_id: int, worker: str, stale_after: float = 60.0, heartbeat_every: float = 10.0
) -> JobOutcome:
    """Run one queued job start to end: claim it, run its request (atlas.tasks.registry: a discovery job
    computes or finds the circuit of each of its relations with `discover_and_store`, the same function an
    inline `atlas discover` calls), report progress and heartbeats, and mark it done or failed. Idempotent:
    every run, edit and analysis has a unique key in the catalogue, so a job run again after a lost worker
    finds what was stored and computes only the rest.

    Transient errors (database or broker unreachable) give the job back to the queue and propagate, for the
    caller to retry; any other error (an unknown kind or a malformed request included) fails the job with
    its message."""
    from atlas.db import jobs as job_store

    claim = job_store.claim_job(engine, job_id, worker, stale_after)
    if claim != "claimed":
        return JobOutcome(claim, [])
    started = time.perf_counter()
    stop = threading.Event()
    lost = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_every):
            try:
                if not job_store.heartbeat(engine, job_id, worker):
                    lost.set()
            except Exception as error:  # a missed heartbeat is not fatal; the next one may get through
                log.warning("job %s: heartbeat failed: %s: %s", job_id, type(error).__name__, error)

    beating = threading.Thread(target=beat, name=f"job-{job_id}-heartbeat", daemon=True)
    beating.start()
    context = JobContext(engine, job_id, worker, lost)
    try:
        kind, data = job_store.get_work(engine, job_id)
        request_of(kind, data).run(context)
        return _finish(engine, context, started)
    except JobLost:
        return _outcome("busy", context)
    except transient_errors():
        # The database may be the thing that is down; then the heartbeat goes stale and it is taken over.
        with contextlib.suppress(Exception):
            job_store.release_job(engine, job_id, worker)
        raise
    except Exception as error:
        return _finish(engine, context, started, str(error) or type(error).__name__)
    finally:
        stop.set()
        beating.join(timeout=5)
