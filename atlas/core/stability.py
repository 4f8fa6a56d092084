"""How stable a circuit's members are under resampling of its discovery facts (a bootstrap).

Attribution keeps each fact's scores, so a resample's scores are a weighted mean of them: no gradient is
recomputed. Each of K resamples (facts drawn with replacement, seeded) re-selects the circuit with the run's
own rule and size (the same number of top-|score| edges or nodes, or the same threshold); a member's
stability is the fraction of resamples whose circuit keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atlas.core.circuit import Circuit
from atlas.core.graph import Graph
from atlas.spec import graph as index
from atlas.spec.params import DEFAULT_TOP_N, DEFAULT_TOP_N_NODES, DiscoveryParams

# A member kept by at least this share of resamples is drawn as stable.
STABLE = 0.8


@dataclass
class Stability:
    resamples: int
    edges: np.ndarray  # float32 [n_writers, n_readers]: share of resamples keeping each edge
    nodes: np.ndarray  # float32 [n_writers]: share keeping each writer as a component (input: 1)

    def of_edges(self, circuit: Circuit) -> list[float]:
        """Stability of the circuit's edges, in row-major order (as `circuit.edges.nonzero()` lists them)."""
        mask = circuit.edges.cpu().numpy()
        return self.edges[mask].tolist()

    def summary(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "stable_share": STABLE}


def select_from_scores(
    graph: Graph, scores: np.ndarray, params: DiscoveryParams, level: str, n_top: int | None
) -> np.ndarray:
    """The circuit (bool edge mask) that `params`' rule cuts from `scores` (numpy): the `n_top` best-ranked
    edges or nodes when given (the size a faithfulness search settled on), else the run's top-n or
    threshold."""
    if level == "node":
        return index.top_n_nodes(graph, scores, n_top or params.top_n or DEFAULT_TOP_N_NODES, params.ranking)
    if n_top is None and params.threshold is not None:
        return index.threshold_edges(graph, scores, params.threshold, params.ranking)
    return index.top_n_edges(graph, scores, n_top or params.top_n or DEFAULT_TOP_N, params.ranking)


def bootstrap_stability(
    graph: Graph,
    per_fact: torch.Tensor,
    select: Callable[[np.ndarray], np.ndarray],
    resamples: int,
    seed: int,
) -> Stability:
    """`per_fact`: `[n_facts, ...]` scores; `select`: scores -> bool edge mask (the run's rule and size)."""
    values = per_fact.detach().cpu().double().numpy()
    n = values.shape[0]
    flat = values.reshape(n, -1)
    rng = np.random.default_rng(seed)
    edge_counts = np.zeros((graph.n_writers, graph.n_readers), dtype=np.int64)
    node_counts = np.zeros(graph.n_writers, dtype=np.int64)
    for _ in range(resamples):
        weights = np.bincount(rng.integers(n, size=n), minlength=n) / n
        edges = select((weights @ flat).reshape(values.shape[1:]))
        edge_counts += edges
        node_counts += index.kept_components(graph, edges)
    k = max(resamples, 1)
    nodes = (node_counts / k).astype(np.float32)
    nodes[0] = 1.0
    return Stability(resamples, (edge_counts / k).astype(np.float32), nodes)
