"""What one discovery job does, start to end, for the CLI now and for workers later: look the run up in
the catalogue, compute it if it is not there, store it.

Models are loaded once per process and kept (loading takes seconds; a worker runs many jobs).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas.core.corpus import CorpusError, Relation, bundled_corpus_path, corpus_hash, load_corpus
from atlas.core.discover import DiscoveryParams, DiscoveryResult, discover
from atlas.core.models import LoadedModel, load_model

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def cached_model(name: str) -> LoadedModel:
    return load_model(name)


def load_relations(corpus: str | Path | None) -> dict[str, Relation]:
    return load_corpus(corpus if corpus is not None else bundled_corpus_path())


def pick_relation(relations: dict[str, Relation], name: str, corpus: str | Path | None) -> Relation:
    if name in relations:
        return relations[name]
    where = corpus if corpus is not None else "the bundled corpus"
    close = difflib.get_close_matches(name, relations, n=3)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else f"; it has {', '.join(sorted(relations)[:8])}, ..."
    )
    raise CorpusError(f"unknown relation {name!r} in {where}{hint}")


def run_discovery(
    model_name: str,
    relation: Relation,
    params: DiscoveryParams,
    progress: Callable[[int, int], None] | None = None,
) -> DiscoveryResult:
    params.validate()  # before the model loads: bad parameters fail at once
    return discover(cached_model(model_name), relation, params, progress)


@dataclass
class StoredDiscovery:
    circuit_id: int
    result: DiscoveryResult | None  # None when the run was already in the catalogue
    reused: bool


def catalogue_engine(url: str | None = None) -> Engine:
    """The catalogue's engine. The embedded SQLite file is created and migrated on first use; a server
    database is migrated by `atlas db upgrade`, never implicitly."""
    from atlas.db.engine import database_url, make_engine, upgrade

    url = url or database_url()
    if url.startswith("sqlite"):
        upgrade(url)
    return make_engine(url)


def discover_and_store(
    model_name: str,
    relation: Relation,
    params: DiscoveryParams,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine | None = None,
) -> StoredDiscovery:
    """The circuit of this exact run from the catalogue, or computed and stored (one transaction)."""
    from atlas.db.store import default_code_version, find_circuit, store_discovery

    params.validate()
    engine = engine or catalogue_engine()
    model = cached_model(model_name)
    corpus, version = corpus_hash([relation]), default_code_version()
    existing = find_circuit(engine, model, relation.name, params, corpus, version)
    if existing is not None:
        return StoredDiscovery(existing, None, reused=True)
    result = discover(model, relation, params, progress)
    return StoredDiscovery(
        store_discovery(engine, result, model, relation, corpus, version), result, reused=False
    )


def store_result(engine: Engine, model_name: str, relation: Relation, result: DiscoveryResult) -> int:
    """Store a computed circuit; its id (the same run stored twice keeps one copy)."""
    from atlas.db.store import default_code_version, store_discovery

    model = cached_model(model_name)
    return store_discovery(engine, result, model, relation, corpus_hash([relation]), default_code_version())


# ------------------------------------------------------------------------------------------------------ jobs

# A transient failure: the database or the broker could not be reached. Retried; anything else fails the job.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def transient_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (*TRANSIENT_ERRORS, OperationalError, InterfaceError)


class JobLost(RuntimeError):
    """This worker no longer holds the job (another took it over after a stall): stop quietly."""


@dataclass
class JobContext:
    """What a job's work function needs besides its request: where to report, and whether the job is still
    this worker's. Results are collected here as they are stored, so a failure keeps what was done."""

    engine: Engine
    job_id: int
    worker: str
    lost: Any  # threading.Event, set when another worker has taken the job over
    circuit_ids: list[int] = field(default_factory=list)
    edit_ids: list[int] = field(default_factory=list)

    def progress(self, relation: str, done: int) -> Callable[[int, int], None]:
        """A facts-scored callback for one relation (the `done`-th) that writes the job's progress at most
        twice a second and stops the work when the job was taken over."""
        import time

        from atlas.db.jobs import report_progress

        last = [0.0]

        def update(facts_done: int, facts_total: int) -> None:
            if self.lost.is_set():
                raise JobLost(f"job {self.job_id} was taken over by another worker")
            moment = time.monotonic()
            if moment - last[0] >= 0.5 or facts_done == facts_total:
                last[0] = moment
                report_progress(
                    self.engine,
                    self.job_id,
                    self.worker,
                    relation=relation,
                    relations_done=done,
                    facts_done=facts_done,
                    facts_total=facts_total,
                )

        return update

    def relation_done(self, relation: str, done: int) -> None:
        from atlas.db.jobs import report_progress

        report_progress(
            self.engine,
            self.job_id,
            self.worker,
            relation=relation,
            relations_done=done,
            circuit_ids=self.circuit_ids,
            edit_ids=self.edit_ids,
        )


def discovery_work(context: JobContext, request_json: dict[str, Any]) -> None:
    """A discovery job's work: the circuit of each relation, found in the catalogue or computed and stored."""
    from atlas.db.jobs import DiscoveryRequest
    from atlas.db.store import load_relation

    request = DiscoveryRequest.from_json(request_json)
    request.params.validate()
    model = cached_model(request.model)  # loaded once per process; a bad model fails the job here
    for done, name in enumerate(request.relations):
        relation = load_relation(context.engine, name)
        progress = context.progress(name, done)
        progress(0, 0)
        stored = discover_and_store(model.name, relation, request.params, progress, context.engine)
        context.circuit_ids.append(stored.circuit_id)
        context.relation_done(name, done + 1)


def _work_of(kind: str) -> Callable[[JobContext, dict[str, Any]], None]:
    if kind == "edit":
        from atlas.edit_jobs import edit_work

        return edit_work
    return discovery_work


@dataclass
class JobOutcome:
    # "done", "failed", "finished" (nothing to do), "busy" (another worker holds it), "lost" (the work
    # ended but the job was no longer this worker's to finish: taken over or cancelled meanwhile)
    status: str
    circuit_ids: list[int]
    error: str | None = None
    work_seconds: float = 0.0


def _lost(
    job_id: int, worker: str, ending: str, circuit_ids: list[int], error: str | None, seconds: float
) -> JobOutcome:
    log.warning(
        "job %s: %s, but no longer held by %s (taken over or cancelled): not recorded", job_id, ending, worker
    )
    return JobOutcome("lost", circuit_ids, error, seconds)


def execute_job(
    engine: Engine, job_id: int, worker: str, stale_after: float = 60.0, heartbeat_every: float = 10.0
) -> JobOutcome:
    """Run one queued job start to end: claim it, do its kind's work (a discovery job computes or finds the
    circuit of each of its relations with `discover_and_store`, the same function an inline `atlas discover`
    calls), report progress and heartbeats, and mark it done or failed. Idempotent: every run (and edit) has
    a unique key in the catalogue, so a job run again after a lost worker finds what was stored and computes
    only the rest.

    Transient errors (database or broker unreachable) give the job back to the queue and propagate, for the
    caller to retry; any other error fails the job with its message."""
    import threading
    import time

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
        kind, request = job_store.get_work(engine, job_id)
        _work_of(kind)(context, request)
        seconds = time.perf_counter() - started
        finished = job_store.finish_job(
            engine,
            job_id,
            worker,
            circuit_ids=context.circuit_ids,
            edit_ids=context.edit_ids,
            work_seconds=seconds,
        )
        if not finished:
            return _lost(job_id, worker, "done", context.circuit_ids, None, seconds)
        return JobOutcome("done", context.circuit_ids, work_seconds=seconds)
    except JobLost:
        return JobOutcome("busy", context.circuit_ids)
    except transient_errors():
        # The database may be the thing that is down; then the heartbeat goes stale and it is taken over.
        with contextlib.suppress(Exception):
            job_store.release_job(engine, job_id, worker)
        raise
    except Exception as error:
        message = str(error) or type(error).__name__
        seconds = time.perf_counter() - started
        finished = job_store.finish_job(
            engine,
            job_id,
            worker,
            circuit_ids=context.circuit_ids,
            edit_ids=context.edit_ids,
            error=message,
            work_seconds=seconds,
        )
        if not finished:
            return _lost(job_id, worker, "failed", context.circuit_ids, message, seconds)
        return JobOutcome("failed", context.circuit_ids, message, seconds)
    finally:
        stop.set()
        beating.join(timeout=5)
