"""Circuit evaluation: Hit@10 of the original model, the circuit and a random circuit of the same size,
faithfulness `(m(circuit) - m(empty)) / (m(full) - m(empty))`, and the faithfulness curve over sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from atlas.core.attribution import Ablation, ablated_activations
from atlas.core.circuit import Circuit, node_circuit, prune
from atlas.core.graph import Graph
from atlas.core.intervention import run_circuit
from atlas.core.metrics import Metric, hits_at_k
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch

# Circuit sizes of the faithfulness curve, in percent of the graph's edges (MIB's grid).
CURVE_PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


@dataclass
class SplitEvaluation:
    n_facts: int
    hit_original: float
    hit_circuit: float
    hit_random: float
    metric_full: float
    metric_empty: float
    metric_circuit: float
    metric_random: float

    @property
    def faithfulness(self) -> float:
        return faithfulness(self.metric_circuit, self.metric_full, self.metric_empty)

    @property
    def faithfulness_random(self) -> float:
        return faithfulness(self.metric_random, self.metric_full, self.metric_empty)


@dataclass
class CurvePoint:
    percent: float
    n_edges: int
    faithfulness: float


@dataclass
class FaithfulnessCurve:
    points: list[CurvePoint] = field(default_factory=list)

    @property
    def area(self) -> float:
        """Area under faithfulness over the fraction of edges kept (trapezoids from 0), MIB's CPR."""
        area, last_x, last_y = 0.0, 0.0, 0.0
        for point in self.points:
            x = point.percent / 100
            area += (x - last_x) * (point.faithfulness + last_y) / 2
            last_x, last_y = x, point.faithfulness
        return area


def faithfulness(circuit: float, full: float, empty: float) -> float:
    gap = full - empty
    return float("nan") if abs(gap) < 1e-9 else (circuit - empty) / gap


@torch.no_grad()
def known_mask(model: LoadedModel, batch: Batch, k: int = 10) -> list[bool]:
    """Whether the model ranks each pair's object in its top k, in `batch.pairs` order."""
    batch = batch.to(model.device)
    logits = model.bridge(batch.clean, return_type="logits")
    return [bool(hit) for hit in hits_at_k(logits, batch, k).tolist()]


@torch.no_grad()
def evaluate_split(
    model: LoadedModel,
    graph: Graph,
    batches: Sequence[Batch],
    circuit: Circuit,
    random: Circuit,
    metric: Metric,
    ablation: Ablation,
) -> SplitEvaluation:
    empty = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    level = circuit.level
    sums = dict.fromkeys(("hit_o", "hit_c", "hit_r", "m_full", "m_empty", "m_c", "m_r"), 0.0)
    n = 0
    for batch in batches:
        batch = batch.to(model.device)
        ablated = ablated_activations(model, graph, batch, ablation)
        full = model.bridge(batch.clean, return_type="logits")
        runs = {
            "c": run_circuit(model, graph, batch.clean, ablated, circuit.edges, level),
            "r": run_circuit(model, graph, batch.clean, ablated, random.edges, level),
        }
        sums["hit_o"] += float(hits_at_k(full, batch).sum())
        sums["hit_c"] += float(hits_at_k(runs["c"], batch).sum())
        sums["hit_r"] += float(hits_at_k(runs["r"], batch).sum())
        sums["m_full"] += float(metric(full, batch).sum())
        sums["m_empty"] += float(
            metric(run_circuit(model, graph, batch.clean, ablated, empty, level), batch).sum()
        )
        sums["m_c"] += float(metric(runs["c"], batch).sum())
        sums["m_r"] += float(metric(runs["r"], batch).sum())
        n += batch.size
    mean = {key: value / max(n, 1) for key, value in sums.items()}
    return SplitEvaluation(
        n_facts=n,
        hit_original=mean["hit_o"],
        hit_circuit=mean["hit_c"],
        hit_random=mean["hit_r"],
        metric_full=mean["m_full"],
        metric_empty=mean["m_empty"],
        metric_circuit=mean["m_c"],
        metric_random=mean["m_r"],
    )


@torch.no_grad()
def faithfulness_curve(
    model: LoadedModel,
    graph: Graph,
    batches: Sequence[Batch],
    scores: torch.Tensor,
    metric: Metric,
    ablation: Ablation,
    percents: Sequence[float] = CURVE_PERCENTS,
) -> FaithfulnessCurve:
    """Faithfulness of the top-|score| circuit at each size in `percents` of all edges (pruned), or of all
    heads and MLPs when `scores` are node scores `[n_writers]`."""
    level = "node" if scores.dim() == 1 else "edge"
    valid = graph.valid_edges if level == "edge" else torch.arange(graph.n_writers) > 0
    flat = scores.abs().cpu().masked_fill(~valid, -1).flatten()
    order = flat.argsort(descending=True)
    circuits = []
    for percent in percents:
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[order[: max(1, round(int(valid.sum()) * percent / 100))]] = True
        if level == "node":
            circuits.append(node_circuit(graph, keep).edges)
        else:
            circuits.append(prune(graph, keep.view(graph.n_writers, graph.n_readers)))
    empty = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    totals = torch.zeros(len(circuits))
    full_total = empty_total = 0.0
    for batch in batches:
        batch = batch.to(model.device)
        ablated = ablated_activations(model, graph, batch, ablation)
        full_total += float(metric(model.bridge(batch.clean, return_type="logits"), batch).sum())
        empty_total += float(
            metric(run_circuit(model, graph, batch.clean, ablated, empty, level), batch).sum()
        )
        for i, keep in enumerate(circuits):
            totals[i] += float(
                metric(run_circuit(model, graph, batch.clean, ablated, keep, level), batch).sum()
            )
    return FaithfulnessCurve(
        [
            CurvePoint(percent, _size(keep, level), faithfulness(float(total), full_total, empty_total))
            for percent, keep, total in zip(percents, circuits, totals.tolist(), strict=True)
        ]
    )


def _size(edges: torch.Tensor, level: str) -> int:
    """Edges kept, or at node level heads and MLPs kept."""
    return int(edges.any(1)[1:].sum()) if level == "node" else int(edges.sum())
