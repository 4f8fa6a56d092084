"""Bootstrap stability from per-fact scores equals recomputing each resample's attribution from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas.core.attribution import edge_scores, fact_scores, graph_of
from atlas.core.discover import DiscoveryParams, discover
from atlas.core.metrics import object_logprob
from atlas.core.pairs import make_batches
from atlas.core.stability import bootstrap_stability, select_from_scores
from atlas.spec import graph as index
from tests.conftest import batches_for


@pytest.mark.parametrize("level", ["edge", "node"])
def test_stability_equals_a_direct_recomputation(tiny_llama, relations, level) -> None:
    batches = batches_for(tiny_llama, relations["country_language"], 6, batch_size=3)
    pairs = [pair for batch in batches for pair in batch.pairs]  # the order fact_scores keeps
    graph = graph_of(tiny_llama)
    per_fact = fact_scores(tiny_llama, batches, object_logprob, method="eap-ig", steps=2, level=level)
    assert per_fact.shape[0] == len(pairs)
    params = DiscoveryParams(top_n=12 if level == "node" else 40, level=level)
    resamples, seed = 6, 3

    def select(scores: np.ndarray) -> np.ndarray:
        return select_from_scores(graph, scores, params, level, None)

    stability = bootstrap_stability(graph, per_fact, select, resamples, seed)
    # From scratch: the same draws, each resample's facts (repeats included) scored anew.
    rng = np.random.default_rng(seed)
    edge_counts = np.zeros((graph.n_writers, graph.n_readers))
    node_counts = np.zeros(graph.n_writers)
    for _ in range(resamples):
        chosen = [pairs[i] for i in rng.integers(len(pairs), size=len(pairs))]
        scores = edge_scores(
            tiny_llama, make_batches(chosen, 4, 0), object_logprob, method="eap-ig", steps=2, level=level
        )
        edges = select(scores.double().numpy())
        edge_counts += edges
        node_counts += index.kept_components(graph, edges)
    np.testing.assert_allclose(stability.edges, edge_counts / resamples, atol=1e-6)
    np.testing.assert_allclose(stability.nodes[1:], node_counts[1:] / resamples, atol=1e-6)
    assert 0 < stability.edges.max() <= 1


def test_discovery_stores_stability_of_its_members_and_zero_turns_it_off(tiny_llama, relations) -> None:
    params = DiscoveryParams(ig_steps=2, top_n=30, max_facts=5, known_only=False, curve=False, bootstrap=8)
    result = discover(tiny_llama, relations["city_in_country"], params)
    assert result.stability is not None and result.stability.resamples == 8
    members = result.stability.edges[result.circuit.edges.numpy()]
    assert members.size == result.circuit.n_edges and ((members >= 0) & (members <= 1)).all()
    # A resample of all facts once each is the run itself: the shares are multiples of 1/8.
    np.testing.assert_allclose(members * 8, np.round(members * 8), atol=1e-5)
    off = discover(
        tiny_llama, relations["city_in_country"], DiscoveryParams(**{**params.__dict__, "bootstrap": 0})
    )
    assert off.stability is None
    assert torch.equal(off.circuit.edges, result.circuit.edges)
