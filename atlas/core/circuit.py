"""Circuits as the torch core holds them: a bool edge mask `[n_writers, n_readers]` over the graph, cut by
the selection rules of `atlas.spec.graph` (one implementation, in numpy) and returned as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atlas.core.graph import Graph
from atlas.spec import graph as index
from atlas.spec.params import DEFAULT_TOP_N as DEFAULT_TOP_N  # re-exported


@dataclass(frozen=True)
class Circuit:
    graph: Graph
    edges: torch.Tensor  # bool [n_writers, n_readers]
    # "node": chosen as a set of nodes, evaluated by patching node outputs; `edges` is then the subgraph
    # those nodes induce (for display and storage).
    level: str = "edge"

    @property
    def kept_writers(self) -> torch.Tensor:
        """Bool [n_writers]: writers with a kept outgoing edge (at node level, the chosen nodes + input)."""
        return self.edges.any(1)

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    @property
    def nodes(self) -> list[str]:
        """Nodes joined by a kept edge, in graph order (`input`, heads and MLPs, `logits`)."""
        return index.nodes_of(self.graph, self.edges.cpu().numpy())

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_components(self) -> int:
        """Heads and MLPs in the circuit (the size a node-level circuit is measured in)."""
        return int(index.kept_components(self.graph, self.edges.cpu().numpy()).sum())

    def edge_names(self) -> list[str]:
        return [self.graph.edge_name(w, r) for w, r in self.edges.nonzero().tolist()]


def _numpy(scores: torch.Tensor) -> np.ndarray:
    return scores.detach().cpu().double().numpy()


def _tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask))


def prune(graph: Graph, edges: torch.Tensor) -> torch.Tensor:
    """Keep only edges on some path from `input` to `logits`."""
    return _tensor(index.prune(graph, edges.cpu().numpy()))


def top_n(graph: Graph, scores: torch.Tensor, n: int, ranking: str = "absolute") -> Circuit:
    """The n best-ranked edges, then pruned (so the circuit can end up smaller than n)."""
    return Circuit(graph, _tensor(index.top_n_edges(graph, _numpy(scores), n, ranking)))


def threshold(graph: Graph, scores: torch.Tensor, tau: float, ranking: str = "absolute") -> Circuit:
    """Edges ranked at least tau (|score| >= tau by default), pruned."""
    return Circuit(graph, _tensor(index.threshold_edges(graph, _numpy(scores), tau, ranking)))


def random_circuit(graph: Graph, n_edges: int, seed: int = 0) -> Circuit:
    """A connected random circuit of at least `n_edges` edges (`atlas.spec.graph.random_circuit_edges`)."""
    rng = np.random.default_rng(seed)
    return Circuit(graph, _tensor(index.random_circuit_edges(graph, n_edges, rng)))


def node_circuit(graph: Graph, kept_writers: torch.Tensor) -> Circuit:
    """The circuit of a set of writer nodes (plus `input`): every edge among them and to `logits`."""
    return Circuit(graph, _tensor(index.node_circuit_edges(graph, kept_writers.cpu().numpy())), level="node")


def top_n_nodes(graph: Graph, node_scores: torch.Tensor, n: int, ranking: str = "absolute") -> Circuit:
    """The n best-ranked heads and MLPs (the input is always kept)."""
    return Circuit(graph, _tensor(index.top_n_nodes(graph, _numpy(node_scores), n, ranking)), level="node")


def random_node_circuit(graph: Graph, n: int, seed: int = 0) -> Circuit:
    rng = np.random.default_rng(seed)
    return node_circuit(graph, _tensor(index.random_node_set(graph, n, rng)))
