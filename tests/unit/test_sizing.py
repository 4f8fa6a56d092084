"""The size search: the smallest top-|score| circuit whose faithfulness reaches the target, up to a cap.

Checked against a linear scan, on a made-up faithfulness function (any shape) and on a tiny model, and the
whole discovery: --target-faithfulness sizes the stored circuit, node level included."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from atlas.core.attribution import edge_scores, graph_of
from atlas.core.discover import DiscoveryParams, discover
from atlas.core.evaluation import Evaluator, Outcome, score_order, top_circuit
from atlas.core.graph import Graph
from atlas.core.metrics import object_logprob
from atlas.core.sizing import search_size
from tests.conftest import batches_for


class FakeEvaluator:
    """Faithfulness as a made-up function of the circuit's size in edges (after pruning)."""

    def __init__(self, graph: Graph, f: Callable[[int], float]) -> None:
        self.graph, self.level, self.f, self.calls = graph, "edge", f, 0

    def outcomes(self, circuits: Sequence[torch.Tensor]) -> list[Outcome]:
        self.calls += len(circuits)
        return [Outcome(self.f(int(c.sum())), 0.0, 0.0) for c in circuits]

    def faithfulness(self, outcome: Outcome) -> float:
        return outcome.metric

    def faithfulness_bound(self, outcome: Outcome, confidence: float) -> float:
        return outcome.metric


def _graph_and_order(seed: int = 0) -> tuple[Graph, np.ndarray]:
    graph = Graph(2, 2)
    scores = np.random.default_rng(seed).standard_normal((graph.n_writers, graph.n_readers))
    return graph, score_order(graph, torch.from_numpy(scores))


def _scan(graph: Graph, order: np.ndarray, f: Callable[[int], float], cap: int) -> list[float]:
    """Faithfulness of the top-n circuit for n = 1..cap, as a linear scan sees it."""
    return [f(int(top_circuit(graph, order, n, "edge").sum())) for n in range(1, cap + 1)]


@pytest.mark.parametrize("target", [0.05, 0.3, 0.5, 0.8, 0.99])
@pytest.mark.parametrize("cap", [1, 7, 20, 40])
def test_rising_faithfulness_gives_the_linear_scan_smallest_size(target: float, cap: int) -> None:
    graph, order = _graph_and_order()

    def f(size: int) -> float:
        return 1 - math.exp(-size / 6)

    evaluator = FakeEvaluator(graph, f)
    choice, edges = search_size(evaluator, order, target, cap, tolerance=0)  # type: ignore[arg-type]
    scan = _scan(graph, order, f, cap)
    expected = next((n for n, value in enumerate(scan, 1) if value >= target), None)
    assert choice.target_met == (expected is not None)
    if expected is not None:
        assert choice.n_top == expected
        assert choice.faithfulness == pytest.approx(scan[expected - 1])
        assert torch.equal(edges, top_circuit(graph, order, expected, "edge"))
    else:  # not reachable: the most faithful size evaluated, which for a rising curve is the cap's
        assert choice.faithfulness == pytest.approx(scan[-1])
    assert evaluator.calls < max(cap, 12)  # fewer evaluations than the scan (but for tiny caps)


def test_any_shape_the_kept_circuit_meets_the_target_when_the_cap_does() -> None:
    rng = np.random.default_rng(0)
    for trial in range(100):
        graph, order = _graph_and_order(trial)
        values = rng.random(graph.n_edges + 1)
        cap = int(rng.integers(1, 40))
        target = float(rng.random())
        scan = _scan(graph, order, lambda size, v=values: float(v[size]), cap)
        evaluator = FakeEvaluator(graph, lambda size, v=values: float(v[size]))
        choice, _ = search_size(evaluator, order, target, cap, tolerance=0)  # type: ignore[arg-type]
        if scan[-1] >= target:
            assert choice.target_met
        if choice.target_met:
            assert scan[choice.n_top - 1] >= target and choice.n_top <= cap
            assert all(value < target for n, _, value, _ in choice.trace if n < choice.n_top)
        else:
            assert choice.faithfulness == max(value for _, _, value, _ in choice.trace)


def test_on_a_tiny_model_the_search_agrees_with_a_linear_scan(tiny_llama, relations) -> None:
    batches = batches_for(tiny_llama, relations["country_capital_city"], 4)
    graph = graph_of(tiny_llama)
    scores = edge_scores(tiny_llama, batches, object_logprob, method="eap-ig", steps=3)
    order = score_order(graph, scores)
    evaluator = Evaluator(tiny_llama, graph, batches, object_logprob, "corrupt", "edge")
    cap = 60
    scan = [
        evaluator.faithfulness(o)
        for o in evaluator.outcomes([top_circuit(graph, order, n, "edge") for n in range(1, cap + 1)])
    ]
    best_so_far = np.maximum.accumulate(scan)
    for target in (0.25, 0.5, 0.75, float(best_so_far[-1]) + 0.01):
        choice, edges = search_size(evaluator, order, target, cap, tolerance=0)
        met_anywhere = any(f >= target for f in scan)
        if scan[-1] >= target:
            assert choice.target_met
        if choice.target_met:
            assert scan[choice.n_top - 1] >= target
            assert torch.equal(edges, top_circuit(graph, order, choice.n_top, "edge"))
            # where faithfulness rises up to the target, the search finds the scan's smallest size
            first = next(n for n, f in enumerate(scan, 1) if f >= target)
            if all(np.diff(scan[:first]) >= 0):
                assert choice.n_top == first
        else:
            assert scan[-1] < target
            assert choice.faithfulness == max(f for _, _, f, _ in choice.trace)
            assert met_anywhere or choice.faithfulness <= max(scan)


def test_discovery_sizes_the_circuit_by_faithfulness(tiny_llama, relations) -> None:
    params = DiscoveryParams(  # judged in sample (out of fold: the tests below)
        ig_steps=2, max_facts=4, known_only=False, batch_size=4, max_edges=80, bootstrap=0, size_folds=0
    )
    result = discover(tiny_llama, relations["country_capital_city"], params)
    assert result.size is not None and result.params.selection == "faithfulness"
    summary = result.summary()
    assert summary["target_met"] == result.size.target_met
    assert summary["size"] == result.circuit.n_edges == result.size.size
    assert result.size.n_top <= 80
    if result.size.target_met:
        assert result.discovery.faithfulness >= 0.8 - 1e-9
        assert result.discovery.faithfulness == pytest.approx(result.size.faithfulness)
    assert result.random.n_edges >= result.circuit.n_edges  # the baseline has the circuit's size


def test_node_level_search_caps_at_max_nodes(tiny_llama, relations) -> None:
    params = DiscoveryParams(
        ig_steps=2, max_facts=4, known_only=False, batch_size=4, level="node", max_nodes=6, bootstrap=0
    )
    result = discover(tiny_llama, relations["country_language"], params)
    assert result.size is not None and result.circuit.level == "node"
    assert result.circuit.n_components == result.size.size <= 6
    assert result.random.n_components == result.circuit.n_components


def test_the_bound_is_a_bootstrap_quantile_and_a_confident_search_is_never_smaller(
    tiny_llama, relations
) -> None:
    from atlas.core.evaluation import BOOTSTRAP_RESAMPLES

    batches = batches_for(tiny_llama, relations["city_in_country"], 8, batch_size=4)
    graph = graph_of(tiny_llama)
    scores = edge_scores(tiny_llama, batches, object_logprob, method="eap-ig", steps=2)
    order = score_order(graph, scores, "signed")
    evaluator = Evaluator(tiny_llama, graph, batches, object_logprob, "corrupt", "edge")
    outcome = evaluator.outcomes([top_circuit(graph, order, 25, "edge")])[0]
    assert evaluator.faithfulness_bound(outcome, 0.0) == evaluator.faithfulness(outcome)
    # By hand: the same seeded draws of the 8 facts, faithfulness of each resample's means.
    full, empty = evaluator.full.per_fact, evaluator.empty.per_fact
    draws = np.random.default_rng(0).integers(8, size=(BOOTSTRAP_RESAMPLES, 8))
    values = [
        (outcome.per_fact[d].mean() - empty[d].mean()) / (full[d].mean() - empty[d].mean()) for d in draws
    ]
    for confidence in (0.5, 0.8, 0.95):
        expected = float(np.quantile(values, 1 - confidence))
        assert evaluator.faithfulness_bound(outcome, confidence) == pytest.approx(
            expected, rel=1e-9, abs=1e-12
        )
    assert evaluator.faithfulness_bound(outcome, 0.95) <= evaluator.faithfulness_bound(outcome, 0.5)
    plain, _ = search_size(evaluator, order, 0.6, 120, tolerance=0)
    confident, _ = search_size(evaluator, order, 0.6, 120, tolerance=0, confidence=0.8)
    if confident.target_met:
        assert plain.target_met and confident.n_top >= plain.n_top and confident.bound >= 0.6


def _pairs(model, relation, n: int):  # type: ignore[no-untyped-def]
    from atlas.core.pairs import make_pairs, tokenize_facts

    tokenized = tokenize_facts(relation, relation.facts, model.encode, model.encode_continuation, None)
    return make_pairs(tokenized, tokenized).pairs[:n]


def test_out_of_fold_faithfulness_pools_the_folds_facts(tiny_llama, relations) -> None:
    """Each fold's facts run on the circuit ranked by the other folds' facts, pooled: checked against an
    evaluator per fold (its facts alone, its own circuit); folds that share one order give the plain
    faithfulness; each fold's order is the other folds' mean."""
    from atlas.core.attribution import fact_scores
    from atlas.core.discover import size_folds
    from atlas.core.pairs import make_batches
    from atlas.core.sizing import Folds, out_of_fold

    pairs = _pairs(tiny_llama, relations["city_in_country"], 9)
    graph = graph_of(tiny_llama)
    batches = make_batches(pairs, 4, pad_id=0)
    per_fact = fact_scores(tiny_llama, batches, object_logprob, method="eap-ig", steps=2)
    params = DiscoveryParams(size_folds=3, batch_size=4, ranking="signed")
    folds = size_folds(graph, per_fact, params)
    assert folds is not None and len(folds) == 3 and sorted(np.bincount(folds.fold_of)) == [3, 3, 3]
    everyone = Evaluator(tiny_llama, graph, batches, object_logprob, "corrupt", "edge")
    sizes = [5, 30, 120]
    judged = out_of_fold(everyone, folds, sizes)

    # By hand: an evaluator per fold over its facts alone, pooled sum(circuit - empty) / sum(full - empty).
    facts = [pair for batch in batches for pair in batch.pairs]  # the evaluator's fact order
    gained, gap = np.zeros(len(sizes)), 0.0
    for k, order in enumerate(folds.orders):
        mine = make_batches([facts[i] for i in np.flatnonzero(folds.fold_of == k)], 4, pad_id=0)
        alone = Evaluator(tiny_llama, graph, mine, object_logprob, "corrupt", "edge")
        empty = alone.empty.per_fact
        gap += float((alone.full.per_fact - empty).sum())
        circuits = [top_circuit(graph, order, n, "edge") for n in sizes]
        gained += [float((o.per_fact - empty).sum()) for o in alone.outcomes(circuits)]
    assert judged == pytest.approx(list(gained / gap), rel=1e-4, abs=1e-5)

    order = score_order(graph, per_fact.mean(0), "signed")
    same = Folds(folds.fold_of, [order] * 3)
    plain = [
        everyone.faithfulness(o)
        for o in everyone.outcomes([top_circuit(graph, order, n, "edge") for n in sizes])
    ]
    assert out_of_fold(everyone, same, sizes) == pytest.approx(plain, rel=1e-4, abs=1e-5)
    assert judged != pytest.approx(plain, rel=1e-3)  # the folds' own rankings matter

    # A fold's order is the other folds' facts' mean: the circuit found without this fold's facts.
    for k, fold_order in enumerate(folds.orders):
        expected = score_order(graph, per_fact[folds.fold_of != k].mean(0), "signed")
        assert np.array_equal(fold_order, expected)
    assert size_folds(graph, per_fact[:3], params) is None  # fewer than two facts a fold: in sample


def test_a_search_judged_out_of_fold_records_what_it_judged(tiny_llama, relations) -> None:
    params = DiscoveryParams(
        ig_steps=2, max_facts=8, known_only=False, batch_size=4, max_edges=150, bootstrap=0, curve=False,
        size_folds=2, target_faithfulness=0.3,
    )  # fmt: skip
    result = discover(tiny_llama, relations["city_in_country"], params)
    size = result.size
    assert size is not None and size.folds == 2
    # out of fold is not in sample: the facts a circuit was ranked on are not the ones it is judged on;
    # in sample is evaluated only for the size kept (no curve here), not for every size tried
    assert len(size.trace) > 2
    in_sample = {n: f for n, _, f, _ in size.trace if not math.isnan(f)}
    assert list(in_sample) == [size.n_top] and in_sample[size.n_top] == size.faithfulness
    assert size.faithfulness == pytest.approx(result.discovery.faithfulness, abs=1e-9)
    assert size.bound != pytest.approx(size.faithfulness, abs=1e-6)
    if size.target_met:
        assert size.bound >= 0.3 and all(j < 0.3 for n, _, _, j in size.trace if n < size.n_top)
    with pytest.raises(Exception, match="size folds must be an integer from 0 to 10"):
        DiscoveryParams(size_folds=11).validate()
    with pytest.raises(Exception, match="give one"):
        DiscoveryParams(size_folds=3, confidence=0.5).validate()
