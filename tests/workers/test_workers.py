"""Real `atlas worker` processes against the real Redis and PostgreSQL, running real extractions on the
tiny Llama: a job runs and stores its circuit; a worker killed with SIGKILL mid-job is replaced and the job
completes with exactly one circuit per relation; two workers share a queue and run each job once; bad
parameters are refused before anything is queued; an edit job and an analysis job (queued by
`atlas analyze ... --enqueue`) run and store their result; a job of an unknown kind fails with its message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from processes import use_broker
from services import WorkerProcess, pg_database, require_pg, require_redis, wait_for
from sqlalchemy import Engine, func, select

from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import JobError, get_job
from atlas.db.models import Circuit, Job, Run
from atlas.db.store import import_relations
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.params import DiscoveryParams
from atlas.tasks.discover import DiscoveryRequest

REDIS_DB = 12
# Small, quick runs on the tiny random model (it knows no facts, so unknown facts are kept).
QUICK = DiscoveryParams(method="eap", max_facts=4, curve=False, known_only=False)
SLOW = DiscoveryParams(method="eap-ig", ig_steps=8, max_facts=16, curve=True, known_only=False)
RELATIONS = ("country_capital_city", "country_language", "city_in_country", "country_currency")

pytestmark = pytest.mark.integration


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Engine, dict[str, str]]]:
    """A migrated PostgreSQL catalogue with the bundled corpus, a flushed Redis database, and the
    environment a worker (and the submitting side) needs to share them."""
    user = require_pg()
    broker = require_redis(REDIS_DB)
    with pg_database(user) as url:
        upgrade(url)
        engine = make_engine(url)
        import_relations(engine, load_corpus(bundled_corpus_path()).values())
        env = {
            "ATLAS_DATABASE_URL": url,
            "ATLAS_BROKER_URL": broker,
            "ATLAS_CACHE_DIR": str(tmp_path / "models"),
            "ATLAS_DEVICE": "cpu",
            "ATLAS_THREADS": "1",
        }
        yield engine, env
        engine.dispose()
    redis.Redis.from_url(broker).flushdb()


def _use_services(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's settings and Celery app at this test's database and broker."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from atlas.spec.config import get_settings

    get_settings.cache_clear()
    use_broker(env["ATLAS_BROKER_URL"])  # not only the URL: Celery caches the previous test's pools


def _submit(
    engine: Engine, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: DiscoveryRequest
) -> int:
    """Submit as `atlas discover --enqueue` does (same function), against this test's broker."""
    _use_services(env, monkeypatch)
    from workers.enqueue import submit_and_send

    submission = submit_and_send(engine, request, "cpu")
    assert submission.created and submission.job_id is not None
    return submission.job_id


def _status(engine: Engine, job_id: int) -> str:
    return str(get_job(engine, job_id)["status"])


def _circuits_per_run(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(select(func.count(Circuit.id)).join(Run).group_by(Run.id)).scalars())


def test_worker_runs_a_job_and_stores_its_circuit(
    services: tuple[Engine, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, env = services
    job_id = _submit(engine, env, monkeypatch, DiscoveryRequest("tiny-llama", RELATIONS[:2], QUICK))
    assert _status(engine, job_id) == "queued"
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: _status(engine, job_id) in ("done", "failed"), 240, "the job", worker.output)
    finally:
        worker.stop()
    job = get_job(engine, job_id)
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 1
    assert job["progress"]["relations_done"] == 2
    assert job["progress"]["facts_total"] > 0  # progress was reported while it ran
    assert len(job["circuit_ids"]) == 2
    assert _circuits_per_run(engine) == [1, 1]
    assert job["work_seconds"] > 0
    # The same job again: every run is stored, so nothing is queued.
    from workers.enqueue import submit_and_send

    again = submit_and_send(engine, DiscoveryRequest("tiny-llama", RELATIONS[:2], QUICK), "cpu")
    assert again.job_id is None
    assert sorted(again.found["existing_circuits"].values()) == sorted(job["circuit_ids"])


def test_sigkilled_worker_job_completes_once_on_a_fresh_worker(
    services: tuple[Engine, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, env = services
    # A lost message comes back after the visibility timeout; a stale heartbeat lets the next worker claim.
    env = {**env, "ATLAS_VISIBILITY_TIMEOUT": "5", "ATLAS_JOB_STALE_SECONDS": "4"}
    job_id = _submit(engine, env, monkeypatch, DiscoveryRequest("tiny-llama", RELATIONS, SLOW))
    first = WorkerProcess(env, tmp_path / "first.log")
    try:
        # Kill it after its first circuit is stored, in the middle of the second relation.
        wait_for(
            lambda: get_job(engine, job_id)["progress"]["relations_done"] >= 1,
            300,
            "the first relation's circuit",
            first.output,
        )
        first.kill()
    finally:
        first.stop()
    killed = get_job(engine, job_id)
    assert killed["status"] == "running", "the job finished before the worker could be killed mid-job"
    done_before = killed["progress"]["relations_done"]
    assert done_before < len(RELATIONS)

    second = WorkerProcess(env, tmp_path / "second.log")
    try:
        wait_for(
            lambda: _status(engine, job_id) in ("done", "failed"), 400, "the job's recovery", second.output
        )
    finally:
        second.stop()
    job = get_job(engine, job_id)
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 2
    assert job["worker"] != killed["worker"]
    assert len(job["circuit_ids"]) == len(RELATIONS) == len(set(job["circuit_ids"]))
    assert _circuits_per_run(engine) == [1] * len(RELATIONS)  # exactly one circuit per run
    assert job["circuit_ids"][:done_before] == killed["circuit_ids"]  # stored ones were found, not redone


def test_two_workers_on_one_queue_run_each_job_once(
    services: tuple[Engine, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, env = services
    job_ids = [
        _submit(engine, env, monkeypatch, DiscoveryRequest("tiny-llama", (relation,), QUICK))
        for relation in RELATIONS
    ]
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        wait_for(
            lambda: all(_status(engine, j) in ("done", "failed") for j in job_ids),
            300,
            "all jobs",
            lambda: "\n".join(w.output() for w in workers),
        )
    finally:
        for worker in workers:
            worker.stop()
    jobs = [get_job(engine, j) for j in job_ids]
    assert [j["status"] for j in jobs] == ["done"] * len(job_ids), [j["error"] for j in jobs]
    assert [j["attempts"] for j in jobs] == [1] * len(job_ids)  # each claimed exactly once
    assert _circuits_per_run(engine) == [1] * len(job_ids)
    received = sum(w.output().count("received") for w in workers)
    assert received == len(job_ids)  # no message delivered twice


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (DiscoveryRequest("tiny-llama", ("country_capital_city",), DiscoveryParams(top_n=0)), "top-n"),
        (DiscoveryRequest("tiny-llama", ("country_capital_city",), DiscoveryParams(method="nope")), "method"),  # type: ignore[arg-type]
        (DiscoveryRequest("tiny-llama", ("no_such_relation",), QUICK), "unknown relation"),
        (DiscoveryRequest("tiny-llama", (), QUICK), "relations"),
        (DiscoveryRequest(" ", ("country_capital_city",), QUICK), "model"),
    ],
)
def test_bad_jobs_are_refused_before_they_are_queued(
    services: tuple[Engine, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    request_: DiscoveryRequest,
    message: str,
) -> None:
    engine, env = services
    with pytest.raises(JobError, match=message):
        _submit(engine, env, monkeypatch, request_)
    with engine.connect() as connection:
        assert connection.execute(select(func.count(Job.id))).scalar() == 0
    assert redis.Redis.from_url(env["ATLAS_BROKER_URL"]).llen("cpu") == 0


def test_worker_runs_an_edit_job_end_to_end(
    services: tuple[Engine, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit job (as `atlas edit --enqueue` submits it) runs on a worker and stores one edit; the same
    edit submitted again is found in the catalogue."""
    from atlas.db.edits import get_edit
    from atlas.tasks.edit import EditJobRequest
    from atlas.tasks.submit import submit_job
    from workers.enqueue import send_new_job

    engine, env = services
    _use_services(env, monkeypatch)
    edit = {"method": "rome", "layer": 1, "steps": 3, "n_prefixes": 2, "cov_tokens": 256}
    request = EditJobRequest("tiny-llama", "country_capital_city", "Japan", "Rome", edit, n_neighbours=1)
    submission = submit_job(engine, request, "cpu")
    assert submission.created and submission.job_id is not None
    send_new_job(engine, submission.job_id, "cpu")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: _status(engine, submission.job_id) in ("done", "failed"), 240, "the edit", worker.output
        )
    finally:
        worker.stop()
    job = get_job(engine, submission.job_id)
    assert job["status"] == "done", job["error"]
    assert job["kind"] == "edit" and job["progress"]["relations_done"] == 1 and len(job["edit_ids"]) == 1
    stored = get_edit(engine, job["edit_ids"][0])
    assert stored["subject"] == "Japan" and stored["new_object"] == "Rome" and stored["components"]
    again = submit_job(engine, request, "cpu")
    assert (again.job_id, again.found["edit_id"]) == (None, stored["id"])


def test_worker_runs_an_analysis_queued_by_the_cli_and_fails_an_unknown_kind(
    services: tuple[Engine, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`atlas analyze lens --enqueue` records an analysis job and sends it; the same command again finds the
    queued job; a worker runs it and stores one analysis, which the job names; the command once more finds
    the stored analysis and queues nothing. A job row of a kind no registry entry names fails on the same
    worker with the registry's message."""
    import json

    from click.testing import CliRunner

    from atlas.cli import main
    from atlas.db.analyses import get_analysis
    from atlas.db.jobs import insert_job
    from atlas.db.store import transaction
    from workers.enqueue import send_job

    engine, env = services
    _use_services(env, monkeypatch)
    command = [
        "analyze", "lens", "--model", "tiny-llama", "--relation", "country_capital_city", "--max-facts", "2",
        "--database-url", env["ATLAS_DATABASE_URL"], "--enqueue",
    ]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(main, [*command, "--json"])
    assert first.exit_code == 0, first.output
    queued = json.loads(first.output)
    assert queued["created"] is True and queued["analysis_id"] is None
    job_id = queued["job_id"]
    again = runner.invoke(main, command)
    assert again.exit_code == 0 and f"job {job_id}: the same job is already queued" in again.output
    with transaction(engine, write=True) as session:
        unknown = insert_job(session, "mystery", "tiny-llama", {"model": "tiny-llama"}, "f" * 64, "cpu", 1)
    send_job(unknown, "cpu")
    assert redis.Redis.from_url(env["ATLAS_BROKER_URL"]).llen("cpu") == 2  # one message each

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: {_status(engine, job_id), _status(engine, unknown)} <= {"done", "failed"},
            240,
            "the analysis and the unknown kind",
            worker.output,
        )
    finally:
        worker.stop()
    job = get_job(engine, job_id)
    assert job["status"] == "done", job["error"]
    assert job["kind"] == "analysis" and job["request"]["analysis"] == "lens"
    assert job["request"]["params"] == {"max_facts": 2, "template": None, "circuit_id": None}
    assert job["progress"]["relations_done"] == 1 and len(job["analysis_ids"]) == 1
    assert job["circuit_ids"] == job["edit_ids"] == []
    stored = get_analysis(engine, job["analysis_ids"][0])
    assert (stored["kind"], stored["model"], stored["relation"]) == ("lens", "tiny-llama", RELATIONS[0])
    assert stored["params"] == {"max_facts": 2, "template": None, "circuit_id": None}
    assert stored["result"]["n_prompts"] == 2 and stored["result"]["components"]

    failed = get_job(engine, unknown)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"] == "unknown job kind 'mystery': one of discover, edit, analysis"

    found = runner.invoke(main, [*command, "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output) == {"job_id": None, "created": False, "analysis_id": stored["id"]}
    shown = runner.invoke(main, command)
    assert f"already in the catalogue: analysis {stored['id']} (nothing queued)" in shown.output
