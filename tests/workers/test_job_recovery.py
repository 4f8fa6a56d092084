"""No job is left without an owner, tested with the real thing: `atlas worker` processes, PostgreSQL and
Redis, with the retry budget cut to seconds (ATLAS_JOB_RETRIES, ATLAS_JOB_RETRY_DELAY[_MAX]).

- The catalogue database disappears mid-job (renamed away, as a dropped connection or a failed-over server
  looks to a client) for longer than the retry budget: the worker gives up, and once the database is back
  the reaper re-queues the job, which completes with one circuit per relation; nothing stays queued.
- The database answers but the work's statements keep failing (a lock held on the relations past the
  lock timeout) for longer than the budget: the job fails with that error stored; neither the queue nor
  the unacknowledged set holds a message for it; the same request submitted again runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from processes import rename_database, use_broker
from services import (
    PG_HOST,
    PG_PORT,
    WorkerProcess,
    pg_database,
    pg_execute,
    require_pg,
    require_redis,
    wait_for,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import get_job
from atlas.db.models import Circuit, Run
from atlas.db.store import import_relations
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.params import DiscoveryParams
from atlas.tasks.discover import DiscoveryRequest

REDIS_DB = 10
QUICK = DiscoveryParams(method="eap", max_facts=4, curve=False, known_only=False)
SLOW = DiscoveryParams(method="eap-ig", ig_steps=8, max_facts=16, curve=True, known_only=False)
RELATIONS = ("country_capital_city", "country_language", "city_in_country")
# Retry budget: 2 retries, 0.5 s then 1 s apart; a stalled job is one silent for 3 s; reaper every second.
FAST_RECOVERY = {
    "ATLAS_JOB_RETRIES": "2",
    "ATLAS_JOB_RETRY_DELAY": "0.5",
    "ATLAS_JOB_RETRY_DELAY_MAX": "1",
    "ATLAS_JOB_STALE_SECONDS": "3",
    "ATLAS_REAPER_SECONDS": "1",
}

pytestmark = pytest.mark.integration


@dataclass
class Services:
    engine: Engine
    env: dict[str, str]
    user: str
    database: str
    broker: str


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
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
            **FAST_RECOVERY,
        }
        yield Services(engine, env, user, str(make_url(url).database), broker)
        engine.dispose()
    redis.Redis.from_url(broker).flushdb()


def _submit(services: Services, monkeypatch: pytest.MonkeyPatch, request: DiscoveryRequest) -> int | None:
    """Submit as `atlas discover --enqueue` does, against this test's database and broker."""
    for key, value in services.env.items():
        monkeypatch.setenv(key, value)
    from atlas.spec.config import get_settings

    get_settings.cache_clear()
    use_broker(services.broker)
    from workers.enqueue import submit_and_send

    return submit_and_send(services.engine, request, "cpu").job_id


def _messages(broker: str) -> tuple[int, int]:
    """Messages waiting in the cpu queue, and taken by a worker but not acknowledged."""
    client = redis.Redis.from_url(broker)
    return int(client.llen("cpu")), int(client.hlen("unacked"))


def _circuits_per_run(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(select(func.count(Circuit.id)).join(Run).group_by(Run.id)).scalars())


def test_a_job_outlives_a_database_outage_longer_than_its_retry_budget(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = DiscoveryRequest("tiny-llama", RELATIONS, SLOW)
    job_id = _submit(services, monkeypatch, request)
    assert job_id is not None
    worker = WorkerProcess(services.env, tmp_path / "worker.log")
    away = f"{services.database}_away"
    try:
        wait_for(
            lambda: get_job(services.engine, job_id)["progress"]["facts_done"] > 0,
            240,
            "the job to start",
            worker.output,
        )
        services.engine.dispose()
        rename_database(services.user, services.database, away)
        try:
            # The outage lasts until the worker has given up (its whole retry budget), and then some.
            wait_for(lambda: "giving up" in worker.output(), 120, "the worker to give up", worker.output)
            time.sleep(4)
        finally:
            rename_database(services.user, away, services.database)
        wait_for(
            lambda: get_job(services.engine, job_id)["status"] in ("done", "failed"),
            300,
            "the job after the outage",
            worker.output,
        )
    finally:
        worker.stop()
    job = get_job(services.engine, job_id)
    assert job["status"] == "done", (job["error"], worker.output()[-3000:])
    assert len(job["circuit_ids"]) == len(RELATIONS) == len(set(job["circuit_ids"]))
    assert _circuits_per_run(services.engine) == [1] * len(RELATIONS)
    assert "re-queued" in worker.output()
    assert _messages(services.broker) == (0, 0)
    # The same request again: every run is stored, so it answers with the circuits and queues nothing.
    again = DiscoveryRequest("tiny-llama", RELATIONS, SLOW)
    from workers.enqueue import submit_and_send

    resubmitted = submit_and_send(services.engine, again, "cpu")
    assert resubmitted.job_id is None
    assert sorted(resubmitted.found["existing_circuits"].values()) == sorted(job["circuit_ids"])


def test_a_job_that_keeps_failing_transiently_fails_with_its_error(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = DiscoveryRequest("tiny-llama", RELATIONS[:1], QUICK)
    job_id = _submit(services, monkeypatch, request)
    assert job_id is not None
    pg_execute(services.user, f"ALTER DATABASE \"{services.database}\" SET lock_timeout = '300ms'")
    services.engine.dispose()  # new sessions take the setting
    blocker = psycopg.connect(host=PG_HOST, port=PG_PORT, user=services.user, dbname=services.database)
    worker: WorkerProcess | None = None
    try:
        blocker.execute("LOCK TABLE relations IN ACCESS EXCLUSIVE MODE")  # held until rollback
        worker = WorkerProcess(services.env, tmp_path / "worker.log")
        wait_for(
            lambda: get_job(services.engine, job_id)["status"] not in ("queued", "running"),
            180,
            "the job to end",
            worker.output,
        )
        blocker.rollback()
        job = get_job(services.engine, job_id)
        assert job["status"] == "failed", job
        assert "gave up after 2 retries" in job["error"] and "lock" in job["error"], job["error"]
        assert job["attempts"] == 3  # the first try and 2 retries
        assert _messages(services.broker) == (0, 0)  # nothing left to deliver
        # The same request again is a new job (a failed job does not hold its request), and it runs.
        again = _submit(services, monkeypatch, request)
        assert again is not None and again != job_id
        wait_for(
            lambda: get_job(services.engine, again)["status"] in ("done", "failed"),
            180,
            "the resubmitted job",
            worker.output,
        )
        assert get_job(services.engine, again)["status"] == "done", get_job(services.engine, again)["error"]
    finally:
        blocker.close()
        if worker is not None:
            worker.stop()
