"""The database holds at most one active (queued or running) job per request key, on each backend: a second
active row is refused below any check in code, ended jobs do not count, `insert_job` names the active job,
and migration 0006 resolves duplicates left by earlier versions before it creates the index."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, column, insert, select, table, update
from sqlalchemy.exc import IntegrityError

from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import DuplicateJob, insert_job
from atlas.db.models import Job
from atlas.db.store import transaction
from atlas.spec.params import DiscoveryParams
from atlas.tasks.discover import DiscoveryRequest

REQUEST = DiscoveryRequest("tiny-llama", ("country_language",), DiscoveryParams())


def _row(status: str = "queued", key: str = REQUEST.key()) -> dict[str, object]:
    return {
        "kind": "discover",
        "queue": "cpu",
        "model_name": REQUEST.model,
        "request": REQUEST.to_dict(),
        "request_key": key,
        "status": status,
        "relations_total": 1,
        "relations_done": 0,
        "facts_done": 0,
        "facts_total": 0,
        "circuit_ids": [],
        "edit_ids": [],
        "attempts": 0,
    }


def _insert(engine: Engine, **values: str) -> None:
    with transaction(engine, write=True) as session:
        session.execute(insert(Job).values(**_row(**values)))


def _insert_at_0004(engine: Engine, **values: str) -> None:
    """A job row as revision 0004 stores it (the model's table has columns 0006 adds)."""
    row = {**_row(**values), "created_at": datetime.now(UTC)}
    jobs = table("jobs", *(column(c.name, c.type) for c in Job.__table__.c if c.name in row))
    with transaction(engine, write=True) as session:
        session.execute(insert(jobs).values(**row))


def test_a_second_active_row_is_refused_by_the_database(engine: Engine) -> None:
    _insert(engine)
    for status in ("queued", "running"):
        with pytest.raises(IntegrityError):
            _insert(engine, status=status)
    for status in ("done", "failed", "cancelled", "done"):
        _insert(engine, status=status)  # ended jobs of the same request: any number
    _insert(engine, key="other")
    with transaction(engine, write=True) as session:
        session.execute(update(Job).where(Job.id == 1).values(status="failed"))
    _insert(engine, status="running")  # the key is free again


def test_insert_job_names_the_active_job(engine: Engine) -> None:
    def insert_one() -> int:
        with transaction(engine, write=True) as session:
            return insert_job(session, "discover", REQUEST.model, REQUEST.to_dict(), REQUEST.key(), "cpu", 1)

    first = insert_one()
    with pytest.raises(DuplicateJob, match=f"job {first}") as raised:
        insert_one()
    assert raised.value.job_id == first


def test_a_submission_that_loses_the_race_names_the_winner(engine: Engine, monkeypatch) -> None:
    """The check before the insert can miss a concurrent submission that commits in between (simulated: the
    first check finds nothing): the unique index refuses the insert, and the retry names the job that won."""
    import atlas.db.jobs

    def insert_one() -> int:
        with transaction(engine, write=True) as session:
            return insert_job(session, "discover", REQUEST.model, REQUEST.to_dict(), REQUEST.key(), "cpu", 1)

    first = insert_one()
    checks: list[str] = []
    active_job = atlas.db.jobs.active_job

    def misses_once(session, key: str) -> int | None:
        checks.append(key)
        return None if len(checks) == 1 else active_job(session, key)

    monkeypatch.setattr(atlas.db.jobs, "active_job", misses_once)
    with pytest.raises(DuplicateJob) as raised:
        insert_one()
    assert raised.value.job_id == first and len(checks) == 2


def test_migration_0006_cancels_duplicates_left_before_it(empty_url: str) -> None:
    upgrade(empty_url, "0004")
    engine = make_engine(empty_url)
    try:
        for status in ("running", "queued", "queued", "done"):
            _insert_at_0004(engine, status=status)
        _insert_at_0004(engine, key="other")
        upgrade(empty_url)
        with engine.connect() as connection:
            rows = connection.execute(select(Job.id, Job.status, Job.error).order_by(Job.id)).all()
        assert [(i, s) for i, s, _ in rows] == [
            (1, "running"),
            (2, "cancelled"),
            (3, "cancelled"),
            (4, "done"),
            (5, "queued"),
        ]
        assert rows[1].error == rows[2].error == "a duplicate of job 1 (cancelled by migration 0006)"
        with pytest.raises(IntegrityError):
            _insert(engine)
    finally:
        engine.dispose()
