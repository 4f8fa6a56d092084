import dataclasses

import pytest
import torch

from atlas.core.attribution import edge_scores, graph_of, writer_outputs
from atlas.core.circuit import (
    Circuit,
    node_circuit,
    prune,
    random_circuit,
    random_node_circuit,
    top_n,
    top_n_nodes,
)
from atlas.core.graph import Graph
from atlas.core.intervention import patched_logits
from atlas.core.metrics import object_logprob
from atlas.core.readout import readout_logits
from tests.conftest import batches_for


def test_pruning_drops_edges_off_every_input_to_logits_path() -> None:
    graph = Graph(2, 2)
    edges = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    path = [(0, graph.qkv_reader(0, 0, 1)), (graph.head_writer(0, 1), graph.logits_reader)]
    dangling_in = (0, graph.mlp_reader(0))  # m0 reads input but feeds nothing
    dangling_out = (graph.head_writer(1, 0), graph.logits_reader)  # a1.h0 is fed by nothing
    for w, r in [*path, dangling_in, dangling_out]:
        edges[w, r] = True
    kept = prune(graph, edges)
    assert sorted(map(tuple, kept.nonzero().tolist())) == sorted(path)


def test_a_circuit_counts_its_edges_nodes_and_components() -> None:
    graph = Graph(2, 2)
    edges = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    chain = [
        (0, graph.qkv_reader(0, 0, 1)),
        (graph.head_writer(0, 1), graph.mlp_reader(0)),
        (graph.mlp_writer(0), graph.logits_reader),
    ]
    for w, r in chain:
        edges[w, r] = True
    circuit = Circuit(graph, edges)
    assert (circuit.n_edges, circuit.n_nodes, circuit.n_components) == (3, 4, 2)
    assert circuit.nodes == ["input", "a0.h1", "m0", "logits"]
    assert circuit.kept_writers.tolist() == [True, False, True, True, False, False, False]
    assert circuit.edge_names() == [graph.edge_name(w, r) for w, r in chain]
    with pytest.raises(dataclasses.FrozenInstanceError):  # shared between evaluations: never changed
        circuit.level = "node"  # type: ignore[misc]


def test_random_baselines_are_reproducible_without_a_seed() -> None:
    """The default seed is 0, so an unseeded random circuit is the same on every run."""
    graph = Graph(4, 3)
    assert torch.equal(random_circuit(graph, 30).edges, random_circuit(graph, 30, seed=0).edges)
    assert torch.equal(random_node_circuit(graph, 5).edges, random_node_circuit(graph, 5, seed=0).edges)
    assert not torch.equal(random_node_circuit(graph, 5).edges, random_node_circuit(graph, 5, seed=1).edges)


def test_top_n_keeps_at_most_n_connected_edges(tiny_llama, relations) -> None:
    graph = graph_of(tiny_llama)
    scores = edge_scores(
        tiny_llama, batches_for(tiny_llama, relations["country_capital_city"], 2), object_logprob
    )
    circuit = top_n(graph, scores, 40)
    assert 0 < circuit.n_edges <= 40
    assert torch.equal(prune(graph, circuit.edges), circuit.edges)
    kept = scores.abs()[circuit.edges]
    assert kept.min() >= scores.abs()[graph.valid_edges].topk(40).values.min()
    assert circuit.nodes[0] == "input" and circuit.nodes[-1] == "logits"


def test_random_circuits_are_connected_and_as_large_as_asked() -> None:
    graph = Graph(4, 3)
    for seed in range(5):
        circuit = random_circuit(graph, 30, seed=seed)
        assert 30 <= circuit.n_edges < 30 + 2 * graph.n_layers + 2
        assert torch.equal(prune(graph, circuit.edges), circuit.edges)
    assert not torch.equal(random_circuit(graph, 30, seed=0).edges, random_circuit(graph, 30, seed=1).edges)


def test_the_full_circuit_is_the_model_and_the_empty_one_the_corrupt_run(tiny_gpt2, relations) -> None:
    batch = batches_for(tiny_gpt2, relations["country_capital_city"], 4)[0]
    graph = graph_of(tiny_gpt2)
    corrupt = writer_outputs(tiny_gpt2, graph, batch.corrupt)
    with torch.no_grad():
        clean_logits = readout_logits(tiny_gpt2, batch.clean, batch)
        corrupt_logits = readout_logits(tiny_gpt2, batch.corrupt, batch)
    everything = graph.valid_edges.clone()
    both = torch.stack([everything, ~everything])  # two circuits in one pass: all edges, none
    logits = patched_logits(tiny_gpt2, graph, batch, corrupt, both, "edge").unflatten(0, (2, -1))
    torch.testing.assert_close(logits[0], clean_logits)
    torch.testing.assert_close(logits[1], corrupt_logits)
    torch.testing.assert_close(
        patched_logits(tiny_gpt2, graph, batch, corrupt, everything[None], "node"), clean_logits
    )


def test_node_patching_matches_edge_patching_of_the_nodes_outputs(tiny_llama, relations) -> None:
    """Removing a node's every outgoing edge is the same as patching its output (additive residual)."""
    batch = batches_for(tiny_llama, relations["country_capital_city"], 3)[0]
    graph = graph_of(tiny_llama)
    corrupt = writer_outputs(tiny_llama, graph, batch.corrupt)
    kept = torch.ones(graph.n_writers, dtype=torch.bool)
    kept[[graph.head_writer(0, 2), graph.mlp_writer(1)]] = False
    edges = graph.valid_edges & kept[:, None]
    torch.testing.assert_close(
        patched_logits(tiny_llama, graph, batch, corrupt, node_circuit(graph, kept).edges[None], "node"),
        patched_logits(tiny_llama, graph, batch, corrupt, edges[None], "edge"),
        atol=1e-5,
        rtol=1e-5,
    )


def test_node_circuits_keep_the_chosen_nodes(tiny_llama, relations) -> None:
    graph = graph_of(tiny_llama)
    scores = edge_scores(
        tiny_llama,
        batches_for(tiny_llama, relations["country_capital_city"], 2),
        object_logprob,
        level="node",
    )
    assert scores.shape == (graph.n_writers,) and scores[0] == 0
    circuit = top_n_nodes(graph, scores, 5)
    assert circuit.level == "node"
    assert int(circuit.kept_writers[1:].sum()) == 5
    best = scores.abs()[1:].topk(5).indices + 1
    assert circuit.kept_writers[best].all()
    assert int(random_node_circuit(graph, 5).kept_writers[1:].sum()) == 5
    assert node_circuit(graph, torch.zeros(graph.n_writers, dtype=torch.bool)).nodes == ["input", "logits"]
