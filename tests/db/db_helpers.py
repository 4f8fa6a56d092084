"""Helpers shared by the catalogue tests (constants, hand-made circuits); fixtures are in conftest.py.
Imported as `db_helpers`: pytest puts tests/db on sys.path (no __init__.py, as in the rest of tests/)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from atlas.core.circuit import Circuit
from atlas.core.discover import DiscoveryParams, DiscoveryResult
from atlas.core.models import LoadedModel
from atlas.spec.corpus import Relation

PARAMS = DiscoveryParams(ig_steps=1, top_n=30, max_facts=4, known_only=False, curve=True)
RELATIONS = ("name_gender", "object_superclass", "substance_phase")  # bias, commonsense, commonsense
CODE_VERSION = "test"

# Hand-made circuits of the three relations (see test_db_queries.py).
HAND = {
    "name_gender": ["input->a0.h0<q>", "a0.h0->m0", "m0->logits", "input->a1.h2<v>", "a1.h2->logits"],
    "object_superclass": ["input->a0.h0<q>", "a0.h0->m0", "m0->logits", "input->m2", "m2->logits"],
    "substance_phase": ["input->a0.h0<k>", "a0.h0->logits", "input->a1.h2<v>", "a1.h2->logits"],
}


@dataclass
class Discovered:
    model: LoadedModel
    relation: Relation
    result: DiscoveryResult


def with_circuit(result: DiscoveryResult, edge_names: list[str]) -> DiscoveryResult:
    """The result with a hand-made circuit of the named edges (for hand-checkable queries)."""
    import torch

    graph = result.circuit.graph
    mask = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    for name in edge_names:
        mask[graph.parse_edge(name)] = True
    return replace(result, circuit=Circuit(graph, mask))


def store_when_told(url: str, payload: str, ready: Any, go: Any, results: Any) -> None:
    """A racing writer, run in a process of its own: load the pickled (result, model info, relation, corpus
    hash), open its own engine, say it is ready, wait for the start, store, and report the circuit id (or
    the error)."""
    import os
    import pickle

    from atlas.db.engine import make_engine
    from atlas.db.store import store_discovery

    with open(payload, "rb") as handle:
        result, info, relation, corpus_sha = pickle.load(handle)
    engine = make_engine(url)
    try:
        ready.put(os.getpid())
        if not go.wait(120):
            results.put(("error", "never told to start"))
            return
        try:
            results.put(("ok", store_discovery(engine, result, info, relation, corpus_sha, CODE_VERSION)))
        except Exception as error:
            results.put(("error", repr(error)))
    finally:
        engine.dispose()
