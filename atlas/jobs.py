"""What one discovery does, start to end, for the inline `atlas discover` and for discovery jobs
(atlas.tasks.discover): look the run up in the catalogue, compute it if it is not there, store it. And what
every inline command and job shares: the catalogue's engine, the corpus's relations, and the per-process
model cache (`cached_model`: loading takes seconds; a worker runs many jobs).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.core.discover import DiscoveryParams, DiscoveryResult, discover
from atlas.core.models import LoadedModel, load_model
from atlas.spec.corpus import CorpusError, Relation, bundled_corpus_path, corpus_hash, load_corpus

if TYPE_CHECKING:
    from sqlalchemy import Engine


@lru_cache(maxsize=2)
def cached_model(name: str) -> LoadedModel:
    return load_model(name)


def load_relations(corpus: str | Path | None) -> dict[str, Relation]:
    return load_corpus(corpus if corpus is not None else bundled_corpus_path())


def pick_relation(relations: dict[str, Relation], name: str, corpus: str | Path | None) -> Relation:
    if name in relations:
        return relations[name]
    where = corpus if corpus is not None else "the bundled corpus"
    close = difflib.get_close_matches(name, relations, n=3)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else f"; it has {', '.join(sorted(relations)[:8])}, ..."
    )
    raise CorpusError(f"unknown relation {name!r} in {where}{hint}")


def run_discovery(
    model_name: str,
    relation: Relation,
    params: DiscoveryParams,
    progress: Callable[[int, int], None] | None = None,
    max_memory: int | None = None,
) -> DiscoveryResult:
    """`max_memory`: bytes the run's peak keeps to (None: ATLAS_MAX_MEMORY_MB, if set)."""
    params.validate()  # before the model loads: bad parameters fail at once
    return discover(cached_model(model_name), relation, params, progress, max_memory)


@dataclass
class StoredDiscovery:
    circuit_id: int
    result: DiscoveryResult | None  # None when the run was already in the catalogue
    reused: bool


def catalogue_engine(url: str | None = None) -> Engine:
    """The catalogue's engine. The embedded SQLite file is created and migrated on first use; a server
    database is migrated by `atlas db upgrade`, never implicitly."""
    from atlas.db.engine import database_url, make_engine, upgrade

    url = url or database_url()
    if url.startswith("sqlite"):
        upgrade(url)
    return make_engine(url)


def discover_and_store(
    model_name: str,
    relation: Relation,
    params: DiscoveryParams,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine | None = None,
    max_memory: int | None = None,
) -> StoredDiscovery:
    """The circuit of this exact run from the catalogue, or computed and stored (one transaction).
    `max_memory` is no part of the run's key: it changes how facts are grouped into passes alone."""
    from atlas.db.store import default_code_version, find_circuit, store_discovery

    params.validate()
    engine = engine or catalogue_engine()
    model = cached_model(model_name)
    corpus, version = corpus_hash([relation]), default_code_version()
    existing = find_circuit(engine, model, relation.name, params, corpus, version)
    if existing is not None:
        return StoredDiscovery(existing, None, reused=True)
    result = discover(model, relation, params, progress, max_memory)
    return StoredDiscovery(
        store_discovery(engine, result, model, relation, corpus, version), result, reused=False
    )


def store_result(engine: Engine, model_name: str, relation: Relation, result: DiscoveryResult) -> int:
    """Store a computed circuit; its id (the same run stored twice keeps one copy)."""
    from atlas.db.store import default_code_version, store_discovery

    model = cached_model(model_name)
    return store_discovery(engine, result, model, relation, corpus_hash([relation]), default_code_version())
