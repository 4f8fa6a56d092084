"""One active job per request, enforced by the database (a unique index over the request keys of queued and
running jobs): 16 identical `POST /jobs` at once to a real `atlas serve` create one job, on SQLite and on
PostgreSQL; the other 15 answers name that job. A finished job's request can be submitted again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_helpers import auth, pg_database
from processes import ServerProcess, race_posts
from services import require_redis
from sqlalchemy import Engine, func, select, update

from atlas.db.engine import make_engine, upgrade
from atlas.db.models import Job
from atlas.db.store import import_relations, transaction
from atlas.spec.corpus import bundled_corpus_path, load_corpus

REDIS_DB = 15
CONCURRENT = 16
JOB = {"model": "tiny-llama", "relations": ["country_language"], "method": "eap", "max_facts": 4}

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    def prepared(url: str) -> tuple[str, Engine]:
        upgrade(url)
        engine = make_engine(url)
        import_relations(engine, load_corpus(bundled_corpus_path()).values())
        return url, engine

    if request.param == "sqlite":
        url, engine = prepared(f"sqlite:///{tmp_path / 'atlas.db'}")
        yield url, engine
        engine.dispose()
        return
    for url in pg_database(request.getfixturevalue("pg_admin")):
        url, engine = prepared(url)
        yield url, engine
        engine.dispose()


def _jobs(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count(Job.id))).scalar_one())


def test_concurrent_identical_posts_create_one_job(catalogue: tuple[str, Engine], tmp_path: Path) -> None:
    url, engine = catalogue
    broker = require_redis(REDIS_DB)
    env = {
        "ATLAS_DATABASE_URL": url,
        "ATLAS_BROKER_URL": broker,
        "ATLAS_API_TOKEN": auth()["Authorization"][7:],
    }
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        for round_ in range(2):
            body = {**JOB, "seed": round_}
            answers = race_posts(server.base, "/jobs", body, auth(), CONCURRENT)
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200] * (CONCURRENT - 1) + [201], [a.text[:200] for a in answers]
            ids = {a.json()["job"]["id"] for a in answers}
            assert len(ids) == 1, ids
        assert _jobs(engine) == 2
        # A finished job does not hold its request: submitting it again queues a new job.
        with transaction(engine, write=True) as session:
            session.execute(update(Job).values(status="failed", error="test"))
        again = httpx.post(f"{server.base}/jobs", json={**JOB, "seed": 0}, headers=auth(), timeout=30)
        assert again.status_code == 201 and again.json()["job"]["id"] not in ids
    finally:
        server.stop()
    import redis

    assert redis.Redis.from_url(broker).llen("cpu") == 3  # one message per job created
    redis.Redis.from_url(broker).flushdb()
