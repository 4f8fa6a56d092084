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


@pytest.mark.parametrize("level", ["edge", "node"])
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_a_circuit_per_fold_runs_each_fact_on_its_folds_circuit(name, request, relations, level) -> None:
    """A FoldCircuit (the size search's out-of-fold judgement) evaluated in one pass gives each fact what
    its own fold's circuit gives it evaluated alone, beside ordinary circuits in the same pass."""
    import numpy as np

    from atlas.core.evaluation import FoldCircuit

    model = request.getfixturevalue(name)
    batches = batches_for(model, relations["city_in_country"], 7, batch_size=4)  # batches of 4 and 3
    graph = graph_of(model)
    scores = edge_scores(model, batches, object_logprob, method="eap", level=level)
    order = score_order(graph, scores)
    # a large circuit too: its readers subtract the dropped edges instead of adding back the kept ones
    large = int(0.7 * (graph.n_edges if level == "edge" else graph.n_components))
    masks = [top_circuit(graph, order, n, level) for n in (12, large, 4)]
    fold_of = np.array([0, 1, 2, 0, 2, 1, 1])
    folds = FoldCircuit(torch.stack(masks), fold_of)
    shared = top_circuit(graph, order, 25, level)
    evaluator = Evaluator(model, graph, batches, object_logprob, "corrupt", level)
    mixed, alone_shared = evaluator.outcomes([folds, shared])
    assert evaluator.forwards == len(batches)  # both in one pass per batch
    separate = Evaluator(model, graph, batches, object_logprob, "corrupt", level)
    per_mask = [o.per_fact for o in separate.outcomes(masks)]
    expected = np.array([per_mask[k][i] for i, k in enumerate(fold_of)])
    assert len({round(float(p.sum()), 4) for p in per_mask}) == 3  # the folds' circuits differ
    np.testing.assert_allclose(mixed.per_fact, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone_shared.per_fact, separate.outcomes([shared])[0].per_fact, atol=1e-5)
    # The same masks dealt differently are another circuit, not a cached one.
    other = evaluator.outcomes([FoldCircuit(torch.stack(masks), fold_of[::-1].copy())])[0]
    assert evaluator.forwards == 2 * len(batches)
    assert not np.allclose(other.per_fact, mixed.per_fact)
