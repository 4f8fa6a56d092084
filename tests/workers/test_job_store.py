"""The job rows that make queued work safe to deliver twice: claims, heartbeats, takeover of a stalled job,
cancellation, and the task's bounded retries on transient errors (SQLite; the worker tests use PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import (
    JobError,
    ModelUnavailable,
    abandon_job,
    cancel_job,
    claim_job,
    finish_job,
    get_job,
    give_up_job,
    list_jobs,
    report_progress,
)
from atlas.db.store import ModelInfo, import_relations, register_model
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.params import DiscoveryParams
from atlas.tasks.discover import DiscoveryRequest
from atlas.tasks.runtime import execute_job
from atlas.tasks.submit import submit_job

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
    assert (get_job(engine, job_id)["circuit_ids"], get_job(engine, job_id)["work_seconds"]) == ([7], 1.5)


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
    items, cursor = list_jobs(engine, after=cursor, limit=1)  # the next page: older jobs, and the last
    assert [j["id"] for j in items] == [first.job_id] and cursor is None
    assert [j["id"] for j in list_jobs(engine, status="queued")[0]] == [other.job_id, first.job_id]
    assert list_jobs(engine, status="done") == ([], None)


def test_a_job_is_given_up_only_by_its_worker_and_an_ended_one_stays_ended(engine: Engine) -> None:
    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None
    assert claim_job(engine, job_id, "w1", stale_after=60) == "claimed"
    assert not give_up_job(engine, job_id, "w2", "not its job")
    assert finish_job(engine, job_id, "w1", circuit_ids=[3])
    assert not give_up_job(engine, job_id, "w1", "too late")
    time.sleep(0.05)
    assert claim_job(engine, job_id, "w3", stale_after=0.01) == "finished"  # its old heartbeat is no stall
    job = get_job(engine, job_id)
    assert (job["status"], job["worker"], job["error"]) == ("done", "w1", None)
    other = submit_job(engine, DiscoveryRequest(REQUEST.model, REQUEST.relations, DiscoveryParams(seed=1)))
    assert other.job_id is not None and claim_job(engine, other.job_id, "w1", stale_after=60) == "claimed"
    assert give_up_job(engine, other.job_id, "w1", "gave up")
    assert (get_job(engine, other.job_id)["status"], get_job(engine, other.job_id)["error"]) == (
        "failed",
        "gave up",
    )


def test_a_worker_holding_two_jobs_writes_to_the_one_it_names(engine: Engine) -> None:
    one = submit_job(engine, REQUEST).job_id
    two = submit_job(
        engine, DiscoveryRequest(REQUEST.model, REQUEST.relations, DiscoveryParams(seed=1))
    ).job_id
    assert one is not None and two is not None
    assert claim_job(engine, one, "w1", 60) == claim_job(engine, two, "w1", 60) == "claimed"
    assert report_progress(engine, one, "w1", relation="country_capital_city", relations_done=1, facts_done=5)
    assert finish_job(engine, one, "w1", circuit_ids=[4])
    job = get_job(engine, two)
    assert (job["status"], job["progress"]["facts_done"], job["circuit_ids"]) == ("running", 0, [])


def test_only_the_named_queued_job_is_abandoned(engine: Engine) -> None:
    one = submit_job(engine, REQUEST).job_id
    two = submit_job(
        engine, DiscoveryRequest(REQUEST.model, REQUEST.relations, DiscoveryParams(seed=1))
    ).job_id
    assert one is not None and two is not None
    abandon_job(engine, one, "could not be queued")
    assert (get_job(engine, one)["status"], get_job(engine, one)["error"]) == (
        "failed",
        "could not be queued",
    )
    assert get_job(engine, two)["status"] == "queued"
    assert claim_job(engine, two, "w1", 60) == "claimed"
    abandon_job(engine, two, "late")  # running: not abandoned
    assert get_job(engine, two)["status"] == "running"


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
    """One that cannot be had is refused at submission; one that is catalogued (so accepted) but does not
    load on this worker fails the job on its first attempt, with the loader's message stored."""
    with pytest.raises(ModelUnavailable, match="'no-such-model-xyz' cannot be loaded here"):
        submit_job(engine, DiscoveryRequest("no-such-model-xyz", REQUEST.relations, REQUEST.params))
    assert list_jobs(engine)[0] == []
    register_model(engine, ModelInfo("elsewhere/only-lm", "LlamaForCausalLM", 2, 4, 64, "float32", "c" * 64))
    job_id = submit_job(
        engine, DiscoveryRequest("elsewhere/only-lm", REQUEST.relations, REQUEST.params)
    ).job_id
    assert job_id is not None
    outcome = execute_job(engine, job_id, "w1")
    job = get_job(engine, job_id)
    assert outcome.status == job["status"] == "failed"
    assert "cannot load model 'elsewhere/only-lm'" in job["error"]
    assert job["attempts"] == 1


def test_transient_errors_retry_with_capped_backoff_then_fail_the_job_with_its_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task retries a transient error ATLAS_JOB_RETRIES times, then gives up: the database answers, so
    the job is failed with the error stored, not left queued with no message. (In-process, eager; the
    worker tests run this path in a real worker against PostgreSQL and Redis.)"""
    import workers.tasks as tasks
    from atlas.spec.config import Settings, get_settings

    monkeypatch.setenv("ATLAS_JOB_RETRIES", "3")
    get_settings.cache_clear()
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
        get_settings.cache_clear()
    assert result.result == "failed"
    assert len(calls) == 4
    job = get_job(engine, job_id)
    assert job["status"] == "failed" and job["attempts"] == 4
    assert job["error"] == "gave up after 3 retries over transient errors: Exception: connection refused"
    monkeypatch.delenv("ATLAS_JOB_RETRIES")
    defaults = Settings()
    delays = [tasks.retry_delay(n, defaults) for n in range(defaults.job_retries)]
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]  # capped; about 7 minutes of outage in all


def test_a_failed_heartbeat_is_logged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from atlas.db import jobs as job_store

    def down(*args: object) -> bool:
        raise OperationalError("update jobs", {}, Exception("server closed the connection"))

    def work(request: object, context: object) -> None:
        time.sleep(0.5)

    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None
    monkeypatch.setattr(job_store, "heartbeat", down)
    monkeypatch.setattr(DiscoveryRequest, "run", work)
    with caplog.at_level("WARNING", logger="atlas.tasks.runtime"):
        outcome = execute_job(engine, job_id, "w1", heartbeat_every=0.1)
    assert outcome.status == "done"
    beats = [r.getMessage() for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(beats) >= 2 and "server closed the connection" in beats[0], caplog.text


def test_a_job_taken_over_while_it_ran_is_not_reported_done(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finish_job refuses a job this worker no longer holds; execute_job then says "lost", not "done"."""
    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None

    def work(request: object, context: object) -> None:
        time.sleep(0.05)
        assert claim_job(engine, job_id, "w2", stale_after=0.01) == "claimed"  # w1 looked dead

    monkeypatch.setattr(DiscoveryRequest, "run", work)
    outcome = execute_job(engine, job_id, "w1", heartbeat_every=60)
    job = get_job(engine, job_id)
    assert outcome.status == "lost"
    assert (job["status"], job["worker"]) == ("running", "w2")


def test_a_stalled_running_job_can_be_cancelled_and_a_live_one_cannot(engine: Engine) -> None:
    job_id = submit_job(engine, REQUEST).job_id
    assert job_id is not None
    assert claim_job(engine, job_id, "w1", stale_after=60) == "claimed"
    with pytest.raises(JobError, match="is running; only a queued job or a running one with no heartbeat"):
        cancel_job(engine, job_id, stale_after=60)
    time.sleep(0.05)
    assert cancel_job(engine, job_id, stale_after=0.01)["status"] == "cancelled"
    assert not finish_job(engine, job_id, "w1", circuit_ids=[1])  # the stalled worker's result is not taken
