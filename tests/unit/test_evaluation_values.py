"""Evaluation values pinned against an independent computation (tests/unit/reference_patching.py): Hit@10 of
the model, the circuit and the random circuit, the metric of the full, empty, circuit and random runs,
faithfulness, and the faithfulness curve with its area, at edge and at node level, on the tiny models.

The facts are built from the model's own predictions (a random model knows no corpus fact): each prompt's
object is the token the model ranks 1st, 2nd, 4th, 7th, 9th, 13th, 21st or 41st, so Hit@10 is neither 0 nor
1 and moves when the circuit changes the logits. Half the objects have two tokens (teacher-forced), and the
prompts have different lengths, so the batches are padded; the reference runs each sequence alone."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from atlas.core import evaluation
from atlas.core.attribution import edge_scores, graph_of
from atlas.core.circuit import Circuit, random_circuit, random_node_circuit, top_n, top_n_nodes
from atlas.core.graph import Graph
from atlas.core.metrics import get_metric, object_logprob
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch, Pair, make_batches
from atlas.spec.corpus import Fact
from tests.unit import reference_patching as ref

# 0-based rank of each fact's object among the model's predictions: most near the Hit@10 boundary.
RANKS = (9, 10, 8, 11, 0, 40, 7, 12)
TOLERANCE = 2e-5  # float32 sums; observed differences are below 2e-6


# ------------------------------------------- the production calls (the one place to adjust when they change)


def evaluate_split(model, graph, batches, circuit: Circuit, random: Circuit, metric, ablation: str) -> Any:
    if hasattr(evaluation, "Evaluator"):  # the evaluator of one split
        evaluator = evaluation.Evaluator(model, graph, batches, metric, ablation, circuit.level)
        return evaluator.evaluate(circuit, random)
    return evaluation.evaluate_split(model, graph, batches, circuit, random, metric, ablation)


def faithfulness_curve(model, graph, batches, scores, metric, ablation: str, percents) -> Any:
    if hasattr(evaluation, "Evaluator"):
        level = "node" if scores.dim() == 1 else "edge"
        evaluator = evaluation.Evaluator(model, graph, batches, metric, ablation, level)
        return evaluation.faithfulness_curve(evaluator, scores, percents)
    return evaluation.faithfulness_curve(model, graph, batches, scores, metric, ablation, percents)


# ----------------------------------------------------------------------------------------------- the facts


def known_pairs(model: LoadedModel, n: int, seed: int = 0) -> list[Pair]:
    """n clean/corrupt pairs of printable-byte prompts (6 to 8 tokens; the corrupt prompt differs in
    positions 1 to 4), objects chosen from the model's clean predictions at the ranks in RANKS."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = [rng.randrange(32, 127) for _ in range(6 + i % 3)]
        corrupt = list(prompt)
        for position in range(1, 5):
            corrupt[position] = rng.randrange(32, 127)
        ranked = ref.logits_of(model, prompt)[-1].argsort(descending=True).tolist()
        objects = [ranked[RANKS[i % len(RANKS)]]]
        if i % 2:  # a second object token: the model's second choice after the first
            objects.append(ref.logits_of(model, [*prompt, objects[0]])[-1].argsort(descending=True)[1].item())
        foil = next(
            t for t in ref.logits_of(model, corrupt)[-1].argsort(descending=True).tolist() if t != objects[0]
        )
        pairs.append(
            Pair(
                Fact(f"s{i}", f"o{i}"),
                Fact(f"c{i}", f"f{i}"),
                tuple(prompt),
                tuple(corrupt),
                tuple(objects),
                (foil,),
            )
        )
    return pairs


@pytest.fixture(scope="module")
def setup(tiny_llama: LoadedModel) -> tuple[LoadedModel, Graph, list[Batch]]:
    batches = make_batches(known_pairs(tiny_llama, 8), 4, pad_id=0)
    assert any(b.position_mask().logical_not().any() for b in batches), "the batches should hold padding"
    return tiny_llama, graph_of(tiny_llama), batches


def edge_set(graph: Graph, circuit: Circuit) -> set[ref.Edge]:
    return {(graph.writer_names[w], graph.reader_names[r]) for w, r in circuit.edges.nonzero().tolist()}


def node_set(circuit: Circuit) -> set[str]:
    return set(circuit.nodes) - {"input", "logits"}


def assert_split_matches(got: Any, want: ref.Evaluation, n_facts: int) -> None:
    assert got.n_facts == n_facts
    for name in (
        "hit_original",
        "hit_circuit",
        "hit_random",
        "metric_full",
        "metric_empty",
        "metric_circuit",
        "metric_random",
        "faithfulness",
        "faithfulness_random",
    ):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=TOLERANCE), name


def assert_sensitive(want: ref.Evaluation) -> None:
    """The reference values must tell the quantities apart, or a mix-up would go unseen."""
    assert want.hit_circuit != want.hit_original and want.hit_random != want.hit_original
    assert 0 < want.hit_original < 1
    assert abs(want.metric_empty - want.metric_random) > 20 * TOLERANCE
    assert abs(want.metric_circuit - want.metric_full) > 20 * TOLERANCE
    assert abs(want.metric_full - want.metric_empty) > 20 * TOLERANCE


@pytest.mark.parametrize(
    ("ablation", "metric"), [("corrupt", "logprob"), ("zero", "logprob"), ("mean", "logit-diff")]
)
def test_edge_level_evaluation_equals_patching_the_kept_edges_by_hand(
    setup, ablation: str, metric: str
) -> None:
    model, graph, batches = setup
    scores = edge_scores(model, batches, object_logprob, method="eap")
    circuit = top_n(graph, scores, 40)
    random = random_circuit(graph, circuit.n_edges, seed=0)
    got = evaluate_split(model, graph, batches, circuit, random, get_metric(metric), ablation)  # type: ignore[arg-type]
    want = ref.evaluate(
        model, [b.pairs for b in batches], edge_set(graph, circuit), edge_set(graph, random), metric, ablation
    )
    print(f"\n{ablation}/{metric}: {want}")
    assert_sensitive(want)
    assert_split_matches(got, want, 8)


@pytest.mark.parametrize("ablation", ["corrupt", "mean"])
def test_node_level_evaluation_equals_patching_the_kept_nodes_by_hand(setup, ablation: str) -> None:
    model, graph, batches = setup
    scores = edge_scores(model, batches, object_logprob, method="eap", level="node")
    circuit = top_n_nodes(graph, scores, 4)
    random = random_node_circuit(graph, 4, seed=1)
    assert node_set(circuit) != node_set(random)
    got = evaluate_split(model, graph, batches, circuit, random, object_logprob, ablation)  # type: ignore[arg-type]
    want = ref.evaluate(
        model, [b.pairs for b in batches], node_set(circuit), node_set(random), "logprob", ablation, "node"
    )
    print(f"\nnode {ablation}: {want}")
    assert_sensitive(want)
    assert_split_matches(got, want, 8)


def _assert_curve_matches(got, want: Sequence[ref.CurvePoint], percents: Sequence[float]) -> None:
    assert [p.percent for p in got.points] == list(percents)
    for point, expected in zip(got.points, want, strict=True):
        assert point.n_edges == expected.size, point
        assert point.faithfulness == pytest.approx(expected.faithfulness, abs=TOLERANCE), point
    assert got.area == pytest.approx(ref.curve_area(want), abs=TOLERANCE)


def test_edge_level_faithfulness_curve_equals_patching_by_hand(setup) -> None:
    model, graph, batches = setup
    # Seeded scores rather than attribution's (the curve is under test, and these have no ties), larger on
    # edges from the input and into the logits so that small circuits hold whole paths.
    scores = torch.randn(graph.n_writers, graph.n_readers, generator=torch.Generator().manual_seed(3))
    scores[0] *= 4
    scores[:, graph.logits_reader] *= 4
    scores = scores * graph.valid_edges
    by_name = {
        (graph.writer_names[w], graph.reader_names[r]): float(scores[w, r])
        for w, r in graph.valid_edges.nonzero().tolist()
    }
    percents = (1, 5, 10, 20, 50, 100)
    got = faithfulness_curve(model, graph, batches, scores, object_logprob, "corrupt", percents)
    want = ref.faithfulness_curve(model, [b.pairs for b in batches], by_name, percents)
    print(f"\nedge curve: {want}")
    assert len({round(p.faithfulness, 3) for p in want}) >= 4, "the sizes should give different values"
    assert want[-1].faithfulness == pytest.approx(1.0, abs=1e-4)
    _assert_curve_matches(got, want, percents)


def test_node_level_faithfulness_curve_equals_patching_by_hand(setup) -> None:
    model, graph, batches = setup
    scores = torch.randn(graph.n_writers, generator=torch.Generator().manual_seed(4))
    by_name = {graph.writer_names[w]: float(scores[w]) for w in range(1, graph.n_writers)}
    percents = (10, 20, 50, 100)
    got = faithfulness_curve(model, graph, batches, scores, object_logprob, "zero", percents)
    want = ref.faithfulness_curve(
        model, [b.pairs for b in batches], by_name, percents, ablation="zero", level="node"
    )
    print(f"\nnode curve: {want}")
    assert len({round(p.faithfulness, 3) for p in want}) >= 3
    _assert_curve_matches(got, want, percents)


def test_the_reference_graph_is_the_graphs(setup) -> None:
    """The edge names the references patch are the production graph's edges, no more and no fewer."""
    model, graph, _ = setup
    assert list(graph.writer_names) == ref.writer_names(model.n_layers, model.n_heads)
    assert list(graph.reader_names) == ref.reader_names(model.n_layers, model.n_heads)
    by_hand = {(w, r) for w in graph.writer_names for r in graph.reader_names if ref.is_edge(w, r)}
    assert by_hand == edge_set(graph, Circuit(graph, graph.valid_edges))


def test_hit_at_10_is_uninformative_once_a_random_circuit_hits_half_the_facts() -> None:
    def split(hit_random: float) -> evaluation.SplitEvaluation:
        return evaluation.SplitEvaluation(4, 1.0, 1.0, hit_random, 0.0, -1.0, -0.5, -1.0)

    assert split(0.25).hit_informative
    assert not split(0.5).hit_informative  # half the facts: a random circuit is as good a guess
    assert not split(1.0).hit_informative
    assert split(0.25).faithfulness == 0.5 and split(0.25).faithfulness_random == 0.0
