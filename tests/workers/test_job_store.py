"""The job rows that make queued work safe to deliver twice: claims, heartbeats, takeover of a stalled job,
cancellation, and the task's bounded retries on transient errors (SQLite; the worker tests use PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from atlas.core.corpus import bundled_corpus_path, load_corpus
from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import (
    DiscoveryRequest,
    JobError,
    cancel_job,
    claim_job,
    finish_job,
    get_job,
    list_jobs,
    report_progress,
    submit_job,
)
from atlas.db.store import import_relations
from atlas.jobs import execute_job
from atlas.spec.params import DiscoveryParams

REQUEST = DiscoveryRequest(
    "tiny-llama", ("country_capital_city",), DiscoveryParams(method="eap", max_facts=2)
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    upgrade(url)
    engine = make_engine(url)
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    yield engine
    engine.dispose()


def test_a_job_is_claimed_by_one_worker_at_a_time(engine: Engine) -> None:
    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None
    assert claim_job(engine, job_id, "w1", stale_after=60) == "claimed"
    assert claim_job(engine, job_id, "w2", stale_after=60) == "busy"
    assert report_progress(
        engine, job_id, "w1", relation="country_capital_city", relations_done=0, facts_done=3, facts_total=8
    )
    assert not report_progress(engine, job_id, "w2", relation="x", relations_done=1)  # not its job
    job = get_job(engine, job_id)
    assert (job["worker"], job["attempts"], job["progress"]["facts_done"]) == ("w1", 1, 3)
    assert finish_job(engine, job_id, "w1", circuit_ids=[7], work_seconds=1.5)
    assert claim_job(engine, job_id, "w2", stale_after=60) == "finished"
    assert get_job(engine, job_id)["circuit_ids"] == [7]


def test_a_stalled_job_is_taken_over_and_its_old_worker_stops_writing(engine: Engine) -> None:
    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None
    assert claim_job(engine, job_id, "dead", stale_after=60) == "claimed"
    time.sleep(0.05)
    assert claim_job(engine, job_id, "fresh", stale_after=0.01) == "claimed"
    job = get_job(engine, job_id)
    assert (job["worker"], job["attempts"], job["status"]) == ("fresh", 2, "running")
    assert not finish_job(engine, job_id, "dead", circuit_ids=[1])  # the old worker's result is not taken


def test_identical_active_jobs_are_not_queued_twice(engine: Engine) -> None:
    first = submit_job(engine, REQUEST)
    second = submit_job(engine, REQUEST)
    assert first.created and not second.created and second.job_id == first.job_id
    other = submit_job(engine, DiscoveryRequest(REQUEST.model, REQUEST.relations, DiscoveryParams(seed=1)))
    assert other.created and other.job_id != first.job_id
    items, cursor = list_jobs(engine, limit=1)
    assert [j["id"] for j in items] == [other.job_id] and cursor == other.job_id


def test_only_queued_jobs_can_be_cancelled_and_a_cancelled_job_does_not_run(engine: Engine) -> None:
    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None
    assert cancel_job(engine, job_id)["status"] == "cancelled"
    assert execute_job(engine, job_id, "w1").status == "finished"
    with pytest.raises(JobError, match="only a queued job"):
        cancel_job(engine, job_id)
    with pytest.raises(JobError, match="no job with id 999"):
        cancel_job(engine, 999)


def test_a_model_that_cannot_load_fails_the_job_at_once_with_its_message(engine: Engine) -> None:
    job_id = submit_job(
        engine, DiscoveryRequest("no-such-model-xyz", REQUEST.relations, REQUEST.params)
    ).job_id
    assert job_id is not None
    outcome = execute_job(engine, job_id, "w1")
    job = get_job(engine, job_id)
    assert outcome.status == job["status"] == "failed"
    assert "no-such-model-xyz" in job["error"]
    assert job["attempts"] == 1


def test_transient_database_errors_retry_with_a_bound(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task retries an unreachable database MAX_RETRIES times, then gives up; the job stays queued for a
    later delivery instead of being marked failed."""
    import workers.tasks as tasks

    job_id = submit_job(engine, REQUEST).job_id
    calls = []

    def unreachable(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise OperationalError("select 1", {}, Exception("connection refused"))

    monkeypatch.setattr(tasks, "_engine", lambda: engine)
    monkeypatch.setattr("atlas.jobs.cached_model", unreachable)
    tasks.app.conf.task_always_eager = True
    try:
        result = tasks.run_job.apply(args=[job_id], throw=False)  # eager: each retry runs at once
    finally:
        tasks.app.conf.task_always_eager = False
    assert isinstance(result.result, OperationalError)
    assert len(calls) == tasks.MAX_RETRIES + 1
    assert get_job(engine, job_id)["status"] == "queued"  # given back each time, never failed
