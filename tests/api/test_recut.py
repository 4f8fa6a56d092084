"""The torch-free graph index and selection rules (atlas.spec.graph), which discovery, the stored re-cuts and
the queries all use, against independent computations: index spaces rebuilt from the node names, pruning by
brute-force reachability, and re-cuts of stored circuits (atlas.db.recut) equal to the circuits discovery
stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from api_helpers import MODELS, PARAMS, store_synthetic

from atlas.db import NotCatalogued
from atlas.db import recut as db_recut
from atlas.db.engine import make_engine, upgrade
from atlas.db.store import import_relations
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.graph import GraphIndex, edge_order, prune, rank_values
from atlas.spec.params import DiscoveryParams

SHAPES = [(1, 1), (2, 4), (3, 2), (12, 12), (30, 9)]


def _layer_and_stage(name: str) -> tuple[int, int]:
    """A node's place in the forward pass from its name: (layer, 0 for heads / 1 for the MLP); input and
    logits before and after everything."""
    if name == "input":
        return (-1, 1)
    if name == "logits":
        return (10**9, 0)
    if name.startswith("m"):
        return (int(name[1:]), 1)
    return (int(name[1:].split(".")[0]), 0)


@pytest.mark.parametrize(("n_layers", "n_heads"), SHAPES)
def test_index_spaces_rebuilt_from_the_names(n_layers: int, n_heads: int) -> None:
    graph = GraphIndex(n_layers, n_heads)
    assert len(graph.writer_names) == graph.n_writers == 1 + n_layers * (n_heads + 1)
    assert len(graph.reader_names) == graph.n_readers == n_layers * (3 * n_heads + 1) + 1
    # An edge runs from a writer to every reader strictly later in the forward pass.
    expected = np.array(
        [
            [_layer_and_stage(w) < _layer_and_stage(node) for node in graph.reader_nodes]
            for w in graph.writer_names
        ]
    )
    assert np.array_equal(graph.valid, expected)
    for w, name in enumerate(graph.writer_names[1:], 1):
        assert [graph.reader_nodes[r] for r in graph.readers_of_writer[w]] == [name] * len(
            graph.readers_of_writer[w]
        )


def _brute_prune(graph: GraphIndex, mask: np.ndarray) -> np.ndarray:
    """Edges on an input -> logits path, by reachability over the kept edges: a node is reached if a kept
    edge from a reached writer enters one of its readers, useful if a kept edge leaves it to a useful one."""
    mask = mask & graph.valid
    node_of_reader = graph.reader_nodes
    reached = {"input"}
    for name in graph.writer_names[1:]:  # forward order
        if any(
            mask[graph.writer_index[w], r]
            for w in reached
            for r in graph.readers_of_writer[graph.writer_index[name]]
        ):
            reached.add(name)
    useful = {"logits"}
    for name in reversed(graph.writer_names):
        w = graph.writer_index[name]
        if name in reached and any(
            mask[w, r] and node_of_reader[r] in useful for r in range(graph.n_readers)
        ):
            useful.add(name)
    keep = np.zeros_like(mask)
    for w, r in zip(*np.nonzero(mask), strict=True):
        if (
            graph.writer_names[w] in reached
            and graph.writer_names[w] in useful
            and node_of_reader[r] in useful
        ):
            keep[w, r] = True
    return keep


@pytest.mark.parametrize(("n_layers", "n_heads"), SHAPES[:4])
def test_pruning_equals_brute_force_reachability(n_layers: int, n_heads: int) -> None:
    graph = GraphIndex(n_layers, n_heads)
    rng = np.random.default_rng(n_layers * 100 + n_heads)
    for density in (0.02, 0.1, 0.3):
        mask = rng.random((graph.n_writers, graph.n_readers)) < density
        assert np.array_equal(prune(graph, mask), _brute_prune(graph, mask))


def test_rankings_order_edges_as_defined() -> None:
    graph = GraphIndex(2, 2)
    scores = np.random.default_rng(0).standard_normal((graph.n_writers, graph.n_readers))
    for ranking, key in (("absolute", np.abs(scores)), ("signed", -scores)):
        order = edge_order(graph, scores, ranking)
        assert len(order) == graph.n_edges and graph.valid.ravel()[order].all()
        assert np.all(np.diff(key.ravel()[order]) <= 0)
        assert np.array_equal(rank_values(scores, ranking), key)
    with pytest.raises(ValueError, match="ranking must be one of"):
        rank_values(scores, "sideways")


def test_recuts_at_the_stored_size_give_the_stored_circuit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    upgrade(url)
    engine = make_engine(url)
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    stored: list[tuple[int, int]] = []
    for seed, info in enumerate(MODELS):
        for ranking in ("absolute", "signed"):
            params = DiscoveryParams(**{**PARAMS.__dict__, "ranking": ranking, "seed": seed})
            stored.append(
                (store_synthetic(engine, info, "country_capital_city", params, seed), params.top_n or 0)
            )
    node_params = DiscoveryParams(method="eap", top_n=3, level="node")
    stored.append((store_synthetic(engine, MODELS[0], "name_gender", node_params, 9, level="node"), 3))
    from atlas.db.queries import circuit_detail

    for circuit_id, n in stored:
        detail = circuit_detail(engine, circuit_id)
        again = db_recut.recut(engine, circuit_id, n)
        assert {e["edge"] for e in again.edges} == {e["edge"] for e in detail["edges"]}, circuit_id
        assert (again.n_edges, again.n_nodes) == (detail["n_edges"], detail["n_nodes"])
        smaller, larger = (
            db_recut.recut(engine, circuit_id, max(n // 2, 1)),
            db_recut.recut(engine, circuit_id, n * 4),
        )
        assert (
            {e["edge"] for e in smaller.edges}
            <= {e["edge"] for e in again.edges}
            <= {e["edge"] for e in larger.edges}
        )
    with pytest.raises(NotCatalogued, match="no circuit with id 999"):
        db_recut.recut(engine, 999, 5)
    engine.dispose()
