"""Catalogue fixtures: a fresh, migrated database per test on SQLite (a temporary file) and on PostgreSQL (a
throw-away database on 127.0.0.1:5432, dropped afterwards; skipped with the reason when no server answers),
and real discovery results from the tiny Llama, computed once per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from db_helpers import PARAMS, RELATIONS, Discovered
from services import pg_database, require_pg
from sqlalchemy import Engine

from atlas.core.discover import discover
from atlas.core.models import LoadedModel, load_model
from atlas.db.engine import make_engine, upgrade
from atlas.spec.corpus import Relation, bundled_corpus_path, corpus_hash, load_corpus


@pytest.fixture(scope="session")
def pg_admin() -> str:
    return require_pg()  # skipped without a server; failed in CI (services.require)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'atlas.db'}"
        return
    with pg_database(request.getfixturevalue("pg_admin")) as url:
        yield url


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
