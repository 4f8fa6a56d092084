"""The torch-free graph index and re-cut (atlas.db.recut) against the torch path (atlas.core.graph,
atlas.core.circuit, atlas.db.store.recut): the same index spaces, the same pruning, the same circuits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from api_helpers import MODELS, PARAMS, store_synthetic

from atlas.core.circuit import prune as torch_prune
from atlas.core.corpus import bundled_corpus_path, load_corpus
from atlas.core.graph import Graph
from atlas.db import CatalogueError
from atlas.db import recut as np_recut
from atlas.db.engine import make_engine, upgrade
from atlas.db.store import import_relations
from atlas.db.store import recut as torch_recut
from atlas.spec.params import DiscoveryParams

SHAPES = [(1, 1), (2, 4), (3, 2), (12, 12), (30, 9)]


@pytest.mark.parametrize(("n_layers", "n_heads"), SHAPES)
def test_index_spaces_match_the_torch_graph(n_layers: int, n_heads: int) -> None:
    graph, index = Graph(n_layers, n_heads), np_recut.GraphIndex(n_layers, n_heads)
    assert (index.n_writers, index.n_readers, index.n_edges) == (
        graph.n_writers,
        graph.n_readers,
        graph.n_edges,
    )
    assert index.writer_names == graph.writer_names and index.reader_names == graph.reader_names
    assert np.array_equal(index.valid_edges, graph.valid_edges.numpy())
    assert np.array_equal(index.writer_of_reader_node, graph.writer_of_reader_node.numpy())


@pytest.mark.parametrize(("n_layers", "n_heads"), SHAPES[:4])
def test_pruning_matches(n_layers: int, n_heads: int) -> None:
    graph, index = Graph(n_layers, n_heads), np_recut.GraphIndex(n_layers, n_heads)
    rng = np.random.default_rng(n_layers * 100 + n_heads)
    for density in (0.02, 0.1, 0.3):
        mask = rng.random((graph.n_writers, graph.n_readers)) < density
        expected = torch_prune(graph, torch.from_numpy(mask)).numpy()
        assert np.array_equal(np_recut.prune(index, mask), expected)


def test_recut_matches_the_torch_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    upgrade(url)
    engine = make_engine(url)
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    edge_ids = [
        store_synthetic(engine, info, "country_capital_city", PARAMS, seed)
        for seed, info in enumerate(MODELS)
    ]
    node_params = DiscoveryParams(method="eap", top_n=3, level="node")
    node_id = store_synthetic(engine, MODELS[0], "name_gender", node_params, 9, level="node")
    for circuit_id in [*edge_ids, node_id]:
        graph_index = np_recut.load_scores(engine, circuit_id).graph
        for n in (0, 1, 5, 20, 60, 10_000):
            expected = torch_recut(engine, circuit_id, n)
            got = np_recut.recut(engine, circuit_id, n)
            expected_edges = set(expected.edge_names())
            assert {e["edge"] for e in got.edges} == expected_edges, (circuit_id, n)
            assert [x["node"] for x in got.nodes] == expected.nodes
            assert (got.n_edges, got.n_nodes) == (expected.n_edges, expected.n_nodes)
            assert graph_index.n_writers == expected.graph.n_writers
    with pytest.raises(CatalogueError, match="no circuit with id 999"):
        np_recut.recut(engine, 999, 5)
    engine.dispose()
