"""How a circuit changed: two circuits over the same graph (say, discovered on a model before and after
an edit) -> nodes and edges gained and lost, and the score change of the edges in both."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from atlas.core.circuit import Circuit
from atlas.spec.json_safe import finite


@dataclass(frozen=True)
class EdgeChange:
    edge: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class CircuitDiff:
    nodes_gained: list[str]
    nodes_lost: list[str]
    nodes_kept: list[str]
    edges_gained: list[str]
    edges_lost: list[str]
    # Edges in both circuits, largest |score change| first; empty when no scores were given.
    rescored: list[EdgeChange] = field(default_factory=list)
    n_edges_kept: int = 0

    @property
    def node_jaccard(self) -> float:
        union = len(self.nodes_kept) + len(self.nodes_gained) + len(self.nodes_lost)
        return len(self.nodes_kept) / union if union else 1.0

    @property
    def edge_jaccard(self) -> float:
        union = self.n_edges_kept + len(self.edges_gained) + len(self.edges_lost)
        return self.n_edges_kept / union if union else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dict(
            finite(
                {
                    "nodes_gained": self.nodes_gained,
                    "nodes_lost": self.nodes_lost,
                    "nodes_kept": self.nodes_kept,
                    "edges_gained": self.edges_gained,
                    "edges_lost": self.edges_lost,
                    "n_edges_kept": self.n_edges_kept,
                    "rescored": [{**asdict(change), "delta": change.delta} for change in self.rescored],
                    "node_jaccard": self.node_jaccard,
                    "edge_jaccard": self.edge_jaccard,
                }
            )
        )


def circuit_diff(
    before: Circuit,
    after: Circuit,
    scores_before: torch.Tensor | None = None,
    scores_after: torch.Tensor | None = None,
) -> CircuitDiff:
    """The difference from `before` to `after`. With both score matrices (`[n_writers, n_readers]`, as
    `DiscoveryResult.scores`), edges in both circuits are listed with their scores' change."""
    if before.graph != after.graph:
        raise ValueError(
            f"circuits over different graphs ({before.graph.n_layers} layers x {before.graph.n_heads} heads "
            f"vs {after.graph.n_layers} x {after.graph.n_heads}) cannot be diffed"
        )
    if (scores_before is None) != (scores_after is None):
        raise ValueError("give the score matrices of both circuits, or of neither")
    graph = before.graph
    old, new = before.edges.cpu(), after.edges.cpu()
    kept_edges = old & new
    rescored: list[EdgeChange] = []
    if scores_before is not None and scores_after is not None:
        expected = (graph.n_writers, graph.n_readers)
        for scores in (scores_before, scores_after):
            if tuple(scores.shape) != expected:
                raise ValueError(f"score matrix of shape {tuple(scores.shape)}, expected {expected}")
        first, second = scores_before.detach().cpu().float(), scores_after.detach().cpu().float()
        rescored = [
            EdgeChange(graph.edge_name(w, r), float(first[w, r]), float(second[w, r]))
            for w, r in kept_edges.nonzero().tolist()
        ]
        rescored.sort(key=lambda change: -abs(change.delta))
    nodes_before, nodes_after = set(before.nodes), set(after.nodes)
    ordered = graph.node_names
    return CircuitDiff(
        nodes_gained=[n for n in ordered if n in nodes_after - nodes_before],
        nodes_lost=[n for n in ordered if n in nodes_before - nodes_after],
        nodes_kept=[n for n in ordered if n in nodes_before & nodes_after],
        edges_gained=[graph.edge_name(w, r) for w, r in (new & ~old).nonzero().tolist()],
        edges_lost=[graph.edge_name(w, r) for w, r in (old & ~new).nonzero().tolist()],
        rescored=rescored,
        n_edges_kept=int(kept_edges.sum()),
    )
