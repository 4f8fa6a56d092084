"""EAP-IG over writer activations: against brute-force patching of every edge (and node) on a tiny model,
and its two exact special cases (one step is EAP; the input's row is EAP-IG over inputs')."""

from __future__ import annotations

import torch

from atlas.core.attribution import edge_scores, graph_of, writer_outputs
from atlas.core.circuit import node_circuit
from atlas.core.intervention import patched_logits
from atlas.core.metrics import object_logprob
from atlas.core.readout import readout_batch, readout_logits
from tests.conftest import batches_for


def _exact_effects(model, graph, batch, keeps: torch.Tensor, level: str) -> torch.Tensor:
    """The metric change when each circuit in `keeps` (all but one edge, or one node) runs instead."""
    corrupt = writer_outputs(model, graph, batch.corrupt)
    with torch.no_grad():
        base = object_logprob(readout_logits(model, batch.clean, batch), readout_batch(batch)).mean()
    out = []
    for chunk in keeps.split(16):
        logits = patched_logits(model, graph, batch, corrupt, chunk, level)
        out.append(
            object_logprob(logits, readout_batch(batch, len(chunk))).view(len(chunk), -1).mean(1) - base
        )
    return torch.cat(out)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def test_edge_scores_track_brute_force_edge_patching(tiny_llama, relations) -> None:
    batch = batches_for(tiny_llama, relations["country_capital_city"], 4)[0]
    graph = graph_of(tiny_llama)
    edges = graph.valid_edges.nonzero().tolist()
    keeps = graph.valid_edges.repeat(len(edges), 1, 1)
    for i, (w, r) in enumerate(edges):
        keeps[i, w, r] = False
    exact = _exact_effects(tiny_llama, graph, batch, keeps, "edge")
    scores = edge_scores(tiny_llama, [batch], object_logprob, method="eap-ig-activations", steps=20)
    estimate = torch.tensor([scores[w, r].item() for w, r in edges])
    # Observed 0.9992 over the 262 edges (EAP: 0.68; EAP-IG over inputs with 20 steps: 0.9988).
    assert _correlation(estimate, exact) > 0.998
    assert (estimate - exact).abs().max() < 0.1 * exact.abs().max()


def test_node_scores_track_brute_force_node_patching(tiny_llama, relations) -> None:
    batch = batches_for(tiny_llama, relations["country_capital_city"], 4)[0]
    graph = graph_of(tiny_llama)
    keeps = []
    for writer in range(1, graph.n_writers):
        kept = torch.ones(graph.n_writers, dtype=torch.bool)
        kept[writer] = False
        keeps.append(node_circuit(graph, kept).edges)
    exact = _exact_effects(tiny_llama, graph, batch, torch.stack(keeps), "node")
    scores = edge_scores(
        tiny_llama, [batch], object_logprob, method="eap-ig-activations", steps=20, level="node"
    )
    assert scores[0] == 0
    assert _correlation(scores[1:], exact) > 0.9995  # observed 0.99991


def test_one_step_is_eap_and_the_input_row_is_eap_ig_over_inputs(tiny_gpt2, relations) -> None:
    batches = batches_for(tiny_gpt2, relations["country_language"], 4)
    activations = edge_scores(tiny_gpt2, batches, object_logprob, method="eap-ig-activations", steps=1)
    torch.testing.assert_close(activations, edge_scores(tiny_gpt2, batches, object_logprob, method="eap"))
    several = edge_scores(tiny_gpt2, batches, object_logprob, method="eap-ig-activations", steps=4)
    inputs = edge_scores(tiny_gpt2, batches, object_logprob, method="eap-ig", steps=4)
    # The input writer's output is the input embedding: both integrate the same path for its edges.
    torch.testing.assert_close(several[0], inputs[0], atol=1e-7, rtol=1e-5)
    assert not torch.allclose(several[1:], inputs[1:], atol=1e-6)
