"""Circuits evaluated several to a forward pass give what one at a time gives; logits only at the target
positions are the model's own logits there; each distinct circuit is run once."""

from __future__ import annotations

import pytest
import torch

from atlas.core.attribution import edge_scores, graph_of
from atlas.core.circuit import random_circuit, random_node_circuit
from atlas.core.evaluation import Evaluator, score_order, top_circuit
from atlas.core.metrics import logit_difference, object_logprob
from atlas.core.readout import readout_logits
from tests.conftest import batches_for


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_readout_logits_are_the_full_forwards_at_the_target_positions(name, request, relations) -> None:
    model = request.getfixturevalue(name)
    batch = batches_for(model, relations["country_currency"], 5)[0]  # multi-token objects, padding
    with torch.no_grad():
        full = model.bridge(batch.clean, return_type="logits")
        ours = readout_logits(model, batch.clean, batch)
    rows = torch.arange(batch.size)[:, None]
    torch.testing.assert_close(ours, full[rows, batch.target_pos], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("level", ["edge", "node"])
@pytest.mark.parametrize("metric", [object_logprob, logit_difference])
def test_bulk_evaluation_equals_one_circuit_at_a_time(tiny_llama, relations, level, metric) -> None:
    batches = batches_for(tiny_llama, relations["city_in_country"], 6, batch_size=4)  # two batches
    graph = graph_of(tiny_llama)
    scores = edge_scores(tiny_llama, batches, object_logprob, method="eap", level=level)
    order = score_order(graph, scores)
    circuits = [top_circuit(graph, order, n, level) for n in (1, 3, 10, 30)]
    circuits.append(
        (random_node_circuit(graph, 4, 1) if level == "node" else random_circuit(graph, 25, 1)).edges
    )
    circuits.append(torch.zeros_like(circuits[0]))
    one_at_a_time = Evaluator(tiny_llama, graph, batches, metric, "corrupt", level, memory_bytes=1)
    assert one_at_a_time.chunk == 1
    bulk = Evaluator(tiny_llama, graph, batches, metric, "corrupt", level)
    assert bulk.chunk >= len(circuits)
    alone = one_at_a_time.outcomes(circuits)
    together = bulk.outcomes(circuits)
    distinct = len({c.numpy().tobytes() for c in circuits})  # some top-n cuts prune to the same edges
    assert distinct >= 4
    assert one_at_a_time.forwards == distinct * len(batches)
    assert bulk.forwards == len(batches)
    for a, b in zip(alone, together, strict=True):
        assert b.metric == pytest.approx(a.metric, rel=1e-5, abs=1e-5)
        assert (b.hit, b.top1) == (a.hit, a.top1)
    # Each distinct circuit runs once: asking again runs nothing.
    bulk.outcomes(circuits[:3])
    assert bulk.forwards == len(batches)
    # A budget for three circuits' differences (half of it; the other half holds ablated outputs): three
    # to a pass, the last pass the rest.
    largest = max(batch.size * batch.clean.shape[1] for batch in batches)
    per_circuit = graph.n_writers * largest * tiny_llama.d_model * 4
    by_three = Evaluator(tiny_llama, graph, batches, metric, "corrupt", level, memory_bytes=6 * per_circuit)
    assert by_three.chunk == 3
    assert [o.metric for o in by_three.outcomes(circuits)] == pytest.approx(
        [o.metric for o in alone], abs=1e-5
    )
    assert by_three.forwards == -(-distinct // 3) * len(batches)


def test_full_and_empty_are_the_clean_and_corrupt_runs(tiny_gpt2, relations) -> None:
    batches = batches_for(tiny_gpt2, relations["country_capital_city"], 4)
    graph = graph_of(tiny_gpt2)
    evaluator = Evaluator(tiny_gpt2, graph, batches, object_logprob, "corrupt", "edge")
    everything = evaluator.outcomes([graph.valid_edges.clone()])[0]
    assert everything.metric == pytest.approx(evaluator.full.metric, abs=1e-4)
    assert evaluator.faithfulness(everything) == pytest.approx(1.0, abs=1e-4)
    assert evaluator.faithfulness(evaluator.empty) == 0.0
