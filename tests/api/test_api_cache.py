"""The response cache answers from memory until the catalogue changes: a stored circuit or a stored edit
empties it (api.cache keys bodies on atlas.db.browse.CATALOGUE_VERSION), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import MODELS, PARAMS, pg_database, store_synthetic
from sqlalchemy import Engine, select

from api.cache import ResponseCache
from atlas.db.engine import make_engine, upgrade
from atlas.db.models import Edit, Model, Relation
from atlas.db.store import import_relations, transaction
from atlas.spec.corpus import bundled_corpus_path, load_corpus


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'atlas.db'}"])
    else:
        urls = pg_database(request.getfixturevalue("pg_admin"))
    for url in urls:
        upgrade(url)
        engine = make_engine(url)
        import_relations(engine, load_corpus(bundled_corpus_path()).values())
        yield engine
        engine.dispose()


def add_edit(engine: Engine) -> None:
    with transaction(engine, write=True) as session:
        session.add(
            Edit(
                model_id=session.scalar(select(Model.id).where(Model.name == MODELS[0].name)),
                relation_id=session.scalar(select(Relation.id).where(Relation.name == "country_language")),
                subject="France",
                prompt="In France people speak",
                old_object="French",
                new_object="German",
                method="rome",
                layer=1,
                params={},
                request_key="e" * 64,
                edited_sha256="f" * 64,
                outcome={},
                update={},
                code_version="test",
            )
        )


def test_a_new_circuit_or_edit_empties_the_cache(engine: Engine) -> None:
    cache = ResponseCache()
    computed: list[int] = []

    def compute() -> dict[str, int]:
        computed.append(1)
        return {"n": len(computed)}

    def answer() -> bytes:
        return cache.get(engine, "key", compute)

    store_synthetic(engine, MODELS[0], "country_language", PARAMS, seed=1)
    first = answer()
    assert answer() == first and len(computed) == 1  # from memory
    store_synthetic(engine, MODELS[0], "country_capital_city", PARAMS, seed=2)
    second = answer()
    assert second != first and len(computed) == 2
    add_edit(engine)  # no new circuit: the edit alone changes the version
    assert answer() != second and len(computed) == 3
    assert answer() and len(computed) == 3
