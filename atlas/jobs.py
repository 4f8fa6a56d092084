"""What one discovery job does, start to end, for the CLI now and for workers later.

Models are loaded once per process and kept (loading takes seconds; a worker runs many jobs).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from atlas.core.corpus import CorpusError, Relation, bundled_corpus_path, load_corpus
from atlas.core.discover import DiscoveryParams, DiscoveryResult, discover
from atlas.core.models import LoadedModel, load_model


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
) -> DiscoveryResult:
    params.validate()  # before the model loads: bad parameters fail at once
    return discover(cached_model(model_name), relation, params, progress)
