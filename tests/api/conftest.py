"""API fixtures: a catalogue of synthetic circuits on each backend (SQLite in a temporary file, a throw-away
PostgreSQL database on 127.0.0.1:5432, skipped with the reason when no server answers), and a TestClient on
the app with a recording job sender. Helpers live in api_helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import (
    Catalogue,
    RecordingSender,
    make_client,
    pg_database,
    populate,
)
from fastapi.testclient import TestClient
from services import require_pg

from atlas.db.engine import make_engine, upgrade


@pytest.fixture(scope="session")
def pg_admin() -> str:
    return require_pg()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('api') / 'atlas.db'}"
        return
    yield from pg_database(request.getfixturevalue("pg_admin"))


@pytest.fixture(scope="module")
def catalogue(db_url: str) -> Iterator[Catalogue]:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        yield populate(engine, db_url)
    finally:
        engine.dispose()


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def client(catalogue: Catalogue, sender: RecordingSender) -> Iterator[TestClient]:
    with make_client(catalogue, sender) as test_client:
        yield test_client
