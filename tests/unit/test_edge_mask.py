"""The learned-mask refinement (`eap-ig-mask`): its continuous intervention against the circuit runs it
relaxes, its optimization, and the method through discovery, on a tiny model."""

from __future__ import annotations

import pytest
import torch

from atlas.core.attribution import edge_mask, fact_scores, graph_of, writer_outputs
from atlas.core.attribution.eap_ig import EAPIGInputs
from atlas.core.attribution.edge_mask import (
    initial_log_alpha,
    learn_mask,
    masked_logits,
    sample_gates,
)
from atlas.core.discover import DiscoveryParams, discover
from atlas.core.evaluation import score_order
from atlas.core.intervention import patched_logits
from atlas.core.metrics import object_logprob
from atlas.core.readout import readout_logits
from atlas.spec.methods import method_spec
from tests.conftest import batches_for


@pytest.fixture(scope="module")
def setup(tiny_llama, relations):
    batch = batches_for(tiny_llama, relations["country_language"], 4)[0]
    graph = graph_of(tiny_llama)
    return tiny_llama, graph, batch, writer_outputs(tiny_llama, graph, batch.corrupt)


def test_a_zero_one_mask_runs_exactly_the_circuit(setup) -> None:
    model, graph, batch, ablated = setup
    generator = torch.Generator().manual_seed(0)
    for share in (0.1, 0.5, 0.9):
        keep = (torch.rand(graph.n_writers, graph.n_readers, generator=generator) < share) & graph.valid_edges
        expected = patched_logits(model, graph, batch, ablated, keep[None], "edge")
        dense = masked_logits(model, graph, batch, ablated, keep.float(), "edge")
        # The same circuit as a support (only its edges gated) with every gate open.
        sparse = masked_logits(
            model,
            graph,
            batch,
            ablated,
            torch.ones_like(dense[0, 0, :1]).expand(graph.n_writers, graph.n_readers),
            "edge",
            keep,
        )
        torch.testing.assert_close(dense, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(sparse, expected, atol=1e-5, rtol=0)
        assert not torch.allclose(expected, readout_logits(model, batch.clean, batch), atol=1e-3)


def test_an_open_mask_is_the_model_and_a_closed_one_the_empty_circuit(setup) -> None:
    model, graph, batch, ablated = setup
    clean = readout_logits(model, batch.clean, batch)
    ones = torch.ones(graph.n_writers, graph.n_readers)
    torch.testing.assert_close(masked_logits(model, graph, batch, ablated, ones, "edge"), clean)
    nothing = torch.zeros(1, graph.n_writers, graph.n_readers, dtype=torch.bool)
    torch.testing.assert_close(
        masked_logits(model, graph, batch, ablated, ones * 0, "edge"),
        patched_logits(model, graph, batch, ablated, nothing, "edge"),
        atol=1e-5,
        rtol=0,
    )


def test_a_zero_one_node_mask_runs_exactly_the_node_circuit(setup) -> None:
    model, graph, batch, ablated = setup
    kept = torch.rand(graph.n_writers, generator=torch.Generator().manual_seed(1)) < 0.5
    kept[0] = True
    expected = patched_logits(model, graph, batch, ablated, (kept[:, None] & graph.valid_edges)[None], "node")
    got = masked_logits(model, graph, batch, ablated, kept.float(), "node")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    halfway = masked_logits(model, graph, batch, ablated, torch.full((graph.n_writers,), 0.5), "node")
    assert not torch.allclose(halfway, expected, atol=1e-3)


def test_the_mask_is_differentiable_in_its_gates(setup) -> None:
    model, graph, batch, ablated = setup
    gates = torch.full((graph.n_writers, graph.n_readers), 0.5, requires_grad=True)
    with torch.enable_grad():
        logits = masked_logits(model, graph, batch, ablated, gates, "edge")
        (grad,) = torch.autograd.grad(logits.sum(), [gates])
    assert grad[graph.valid_edges].abs().sum() > 0
    assert grad[~graph.valid_edges].abs().sum() == 0
    assert all(p.grad is None for p in model.hf_model.parameters())


def test_gates_and_their_start_follow_the_attribution_ranking(setup) -> None:
    _, graph, _, _ = setup
    start = -torch.rand(graph.n_writers, graph.n_readers, generator=torch.Generator().manual_seed(2))
    start = start * graph.valid_edges
    init = initial_log_alpha(graph, start, "edge")
    order = score_order(graph, start, "signed")
    values = init.flatten()[torch.from_numpy(order)]
    assert values[0] == pytest.approx(edge_mask.INIT_LOGIT)
    assert bool((values[1:] < values[:-1]).all())  # strictly decreasing: no ties
    gates = sample_gates(torch.tensor([-50.0, 0.0, 50.0]).repeat(200), torch.Generator().manual_seed(0))
    assert gates.min() == 0 and gates.max() == 1
    assert gates.view(200, 3)[:, 0].max() == 0 and gates.view(200, 3)[:, 2].min() == 1


def test_the_optimization_raises_faithfulness(tiny_llama, relations) -> None:
    batch = batches_for(tiny_llama, relations["country_language"], 8)[0]
    graph = graph_of(tiny_llama)
    start = EAPIGInputs().batch_scores(tiny_llama, graph, batch, object_logprob, 2, "corrupt", "edge")

    def losses(lr: float) -> tuple[float, float]:
        # No sparsity: the objective is faithfulness alone (the multiplier only scales it).
        learned = learn_mask(
            tiny_llama,
            graph,
            batch,
            object_logprob,
            "corrupt",
            "edge",
            start.mean(0),
            steps=30,
            lr=lr,
            sparsity=0.0,
        )
        assert len(learned.losses) == 30
        return sum(learned.losses[:5]) / 5, sum(learned.losses[-5:]) / 5

    first, last = losses(0.3)
    assert last < first - 0.1
    first, last = losses(0.0)  # the gates' sampling noise alone
    assert abs(last - first) < 0.1


def test_the_method_runs_through_discovery_and_ranks_by_the_mask(tiny_llama, relations, monkeypatch) -> None:
    monkeypatch.setattr(edge_mask, "MASK_STEPS", 3)
    assert method_spec("eap-ig-mask").takes_steps
    batches = batches_for(tiny_llama, relations["country_language"], 4)
    scores = fact_scores(tiny_llama, batches, object_logprob, method="eap-ig-mask", steps=2)
    graph = graph_of(tiny_llama)
    assert scores.shape == (4, graph.n_writers, graph.n_readers)
    assert bool((scores[:, graph.valid_edges] < 0).all()) and bool((scores[:, ~graph.valid_edges] == 0).all())
    torch.testing.assert_close(scores[0], scores[3])  # one mask for the batch
    # Signed and absolute rankings agree: both order edges by the learned gate.
    mean = scores.mean(0)
    assert (score_order(graph, mean, "signed") == score_order(graph, mean, "absolute")).all()

    params = DiscoveryParams(
        method="eap-ig-mask", ig_steps=2, max_facts=4, known_only=False, curve=False, bootstrap=2
    )
    result = discover(tiny_llama, relations["country_language"], params)
    assert result.size is not None and result.circuit.n_edges == result.size.size
    assert result.summary()["method"] == "eap-ig-mask"
    nodes = discover(
        tiny_llama,
        relations["country_language"],
        DiscoveryParams(
            method="eap-ig-mask",
            ig_steps=2,
            max_facts=4,
            known_only=False,
            curve=False,
            bootstrap=0,
            level="node",
        ),
    )
    assert nodes.circuit.level == "node" and nodes.scores[0] == 0
