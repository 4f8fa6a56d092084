"""Catalogue fixtures: a fresh, migrated database per test on SQLite (a temporary file) and on PostgreSQL (a
throw-away database on 127.0.0.1:5432, dropped afterwards; skipped with the reason when no server answers),
and real discovery results from the tiny Llama, computed once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from db_helpers import PARAMS, RELATIONS, Discovered
from sqlalchemy import Engine

from atlas.core.corpus import Relation, bundled_corpus_path, corpus_hash, load_corpus
from atlas.core.discover import discover
from atlas.core.models import LoadedModel, load_model
from atlas.db.engine import make_engine, upgrade

PG_HOST, PG_PORT = "127.0.0.1", 5432


def _pg_admin_user() -> tuple[str | None, str]:
    """A user that can create databases on the local server, or None and why not."""
    try:
        import psycopg
    except ImportError as error:  # pragma: no cover
        return None, f"psycopg not installed: {error}"
    reasons = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=3
            ) as connection:
                connection.execute("select 1")
            return user, ""
        except psycopg.Error as error:
            reasons.append(f"{user}: {str(error).strip().splitlines()[0]}")
    return None, f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable ({'; '.join(reasons)})"


@pytest.fixture(scope="session")
def pg_admin() -> str:
    user, reason = _pg_admin_user()
    if user is None:
        if os.environ.get("ATLAS_REQUIRE_POSTGRES"):  # CI: a missing server is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    return user


def _pg_execute(user: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as c:
        c.execute(sql.encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'atlas.db'}"
        return
    user = request.getfixturevalue("pg_admin")
    name = f"atlas_test_{uuid.uuid4().hex[:12]}"
    _pg_execute(user, f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _pg_execute(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    """A migrated, empty catalogue on each backend."""
    upgrade(empty_url)
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def corpus() -> dict[str, Relation]:
    return load_corpus(bundled_corpus_path())


@pytest.fixture(scope="session")
def corpus_sha(corpus: dict[str, Relation]) -> str:
    return corpus_hash(corpus.values())


@pytest.fixture(scope="session")
def llama() -> LoadedModel:
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def discovered(llama: LoadedModel, corpus: dict[str, Relation]) -> dict[str, Discovered]:
    """Edge-level circuits of three relations in the tiny Llama."""
    return {
        name: Discovered(llama, corpus[name], discover(llama, corpus[name], PARAMS)) for name in RELATIONS
    }


@pytest.fixture(scope="session")
def node_discovered(llama: LoadedModel, corpus: dict[str, Relation]) -> Discovered:
    relation = corpus["country_capital_city"]
    params = replace(PARAMS, level="node", top_n=5)
    return Discovered(llama, relation, discover(llama, relation, params))
