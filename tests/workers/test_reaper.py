"""The reaper on each backend, with the real Redis broker holding (or not) each job's message: a running job
whose heartbeat went stale and a queued job untouched as long are re-queued and sent again only when no
message for them is left (waiting in the queue, or delivered and unacknowledged); a fresh one is left alone;
a job re-queued too often is failed with a note; of two reapers that find the same orphan only one sends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Queue
from processes import use_broker
from services import pg_database, require_pg, require_redis
from sqlalchemy import Engine, update

from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import claim_job, get_job, orphan_candidates, requeue_orphan
from atlas.db.models import Job
from atlas.db.store import import_relations, transaction
from atlas.spec.config import Settings
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.params import DiscoveryParams
from atlas.tasks.discover import DiscoveryRequest
from atlas.tasks.submit import submit_job

REDIS_DB = 9
STALE = 0.3


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    def prepared(url: str) -> Engine:
        upgrade(url)
        engine = make_engine(url)
        import_relations(engine, load_corpus(bundled_corpus_path()).values())
        return engine

    if request.param == "sqlite":
        engine = prepared(f"sqlite:///{tmp_path / 'atlas.db'}")
        yield engine
        engine.dispose()
        return
    with pg_database(require_pg()) as url:
        engine = prepared(url)
        yield engine
        engine.dispose()


@pytest.fixture
def broker() -> Iterator[str]:
    url = require_redis(REDIS_DB)
    use_broker(url)
    yield url
    redis.Redis.from_url(url).flushdb()


def _settings(broker: str, **overrides: object) -> Settings:
    return Settings(broker_url=broker, job_stale_seconds=STALE, job_max_requeues=2, **overrides)  # type: ignore[arg-type]


class Sent:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, job_id: int, queue: str) -> str:
        from workers.enqueue import send_job

        self.ids.append(job_id)
        return send_job(job_id, queue)  # a real message, so the next pass sees it


def _job(engine: Engine, seed: int) -> int:
    request = DiscoveryRequest("tiny-llama", ("country_language",), DiscoveryParams(seed=seed))
    job_id = submit_job(engine, request).job_id
    assert job_id is not None
    return job_id


def test_orphans_are_requeued_only_without_a_message(engine: Engine, broker: str) -> None:
    from workers.enqueue import send_job
    from workers.reaper import jobs_with_messages, reap

    stalled, waiting, lost = (_job(engine, seed) for seed in range(3))
    assert claim_job(engine, stalled, "dead-worker", STALE) == "claimed"  # running, then silent
    send_job(waiting, "cpu")  # queued, its message in the queue
    time.sleep(STALE + 0.2)
    fresh = _job(engine, 9)  # `lost` is queued with no message (its sender died); `fresh` too, but is new
    assert jobs_with_messages(broker) == {waiting}
    sent = Sent()
    outcomes = reap(engine, sent, _settings(broker))
    assert outcomes == {stalled: "requeued", lost: "requeued"}
    assert sorted(sent.ids) == sorted([stalled, lost])
    for job_id in (stalled, lost):
        job = get_job(engine, job_id)
        assert (job["status"], job["worker"], job["requeues"]) == ("queued", None, 1)
    assert get_job(engine, fresh)["requeues"] == get_job(engine, waiting)["requeues"] == 0
    assert jobs_with_messages(broker) == {waiting, stalled, lost}
    time.sleep(STALE + 0.2)
    assert reap(engine, Sent(), _settings(broker)) == {fresh: "requeued"}  # the rest have messages now


def test_a_delivered_unacknowledged_message_counts(engine: Engine, broker: str) -> None:
    """A job whose message a worker holds (running it, or waiting out a retry's countdown) is not an orphan
    even when its heartbeat is stale."""
    import workers.app
    from workers.enqueue import send_job
    from workers.reaper import jobs_with_messages, reap

    job_id = _job(engine, 0)
    send_job(job_id, "cpu")
    with workers.app.app.connection_for_read() as connection:
        consumer = connection.SimpleQueue(Queue("cpu"))
        message = consumer.get(timeout=5)  # taken, not acknowledged
        assert redis.Redis.from_url(broker).hlen("unacked") == 1 and jobs_with_messages(broker) == {job_id}
        assert claim_job(engine, job_id, "slow-worker", STALE) == "claimed"
        time.sleep(STALE + 0.2)
        assert reap(engine, Sent(), _settings(broker)) == {}
        message.ack()
        consumer.close()
    assert jobs_with_messages(broker) == set()
    assert reap(engine, Sent(), _settings(broker)) == {job_id: "requeued"}


def test_a_job_requeued_too_often_is_failed_with_a_note(engine: Engine, broker: str) -> None:
    from workers.reaper import reap

    job_id = _job(engine, 0)
    with transaction(engine, write=True) as session:
        session.execute(update(Job).where(Job.id == job_id).values(requeues=2))
    assert claim_job(engine, job_id, "w9", STALE) == "claimed"
    time.sleep(STALE + 0.2)
    sent = Sent()
    assert reap(engine, sent, _settings(broker)) == {job_id: "failed"}
    job = get_job(engine, job_id)
    assert sent.ids == [] and job["status"] == "failed"
    assert job["error"].startswith("abandoned: re-queued 2 times after its worker stopped (last worker w9)")


def test_two_reapers_finding_one_orphan_send_it_once(engine: Engine, broker: str) -> None:
    job_id = _job(engine, 0)
    assert claim_job(engine, job_id, "w1", STALE) == "claimed"
    time.sleep(STALE + 0.2)
    first, second = orphan_candidates(engine, STALE), orphan_candidates(engine, STALE)
    assert [o.id for o in first] == [o.id for o in second] == [job_id]
    assert requeue_orphan(engine, first[0], STALE, 2) == "requeued"
    assert requeue_orphan(engine, second[0], STALE, 2) == "changed"


def test_an_outdated_reading_of_an_orphan_changes_nothing_and_a_lowered_limit_fails_it(
    engine: Engine,
) -> None:
    """The re-queue is conditional on the re-queue count read: a reaper holding an older reading of an
    orphan that another reaper re-queued (and that went stale again since) does not send it twice. An
    orphan re-queued more often than a (since lowered) limit is failed, and said so."""
    job_id = _job(engine, 0)  # queued, and no message sent: lost
    time.sleep(STALE + 0.2)
    (old,) = orphan_candidates(engine, STALE)
    assert requeue_orphan(engine, old, STALE, 2) == "requeued"
    time.sleep(STALE + 0.2)
    assert requeue_orphan(engine, old, STALE, 2) == "changed"
    (again,) = orphan_candidates(engine, STALE)
    assert again.requeues == 1
    assert requeue_orphan(engine, again, STALE, 0) == "failed"
    assert get_job(engine, job_id)["status"] == "failed"


def test_a_pass_that_cannot_read_the_broker_requeues_nothing(engine: Engine, broker: str) -> None:
    from workers.reaper import reap, revive

    job_id = _job(engine, 0)
    assert claim_job(engine, job_id, "w1", STALE) == "claimed"
    time.sleep(STALE + 0.2)
    unreadable = _settings("redis://127.0.0.1:1/0")
    assert reap(engine, Sent(), unreadable) == {}
    assert get_job(engine, job_id)["status"] == "running"
    # A resubmission of the same request still revives it (a duplicate message would be harmless).
    sent = Sent()
    assert revive(engine, job_id, sent, unreadable) and sent.ids == [job_id]
