"""Circuit selection: top-n edges by absolute score or a score threshold, pruned to input->logits paths.

A circuit is a bool mask `[n_writers, n_readers]` over the graph's edges.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from atlas.core.graph import Graph
from atlas.core.params import DEFAULT_TOP_N as DEFAULT_TOP_N  # re-exported


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
        kept: set[str] = set()
        for writer, reader in self.edges.nonzero().tolist():
            kept.update((self.graph.writer_names[writer], self.graph.reader_nodes[reader]))
        return [name for name in self.graph.node_names if name in kept]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def edge_names(self) -> list[str]:
        return [self.graph.edge_name(w, r) for w, r in self.edges.nonzero().tolist()]


def prune(graph: Graph, edges: torch.Tensor) -> torch.Tensor:
    """Keep only edges on some path from `input` to `logits`."""
    edges = edges.cpu() & graph.valid_edges
    reader_writer = graph.writer_of_reader_node
    # Forward: which writers are reached from input through kept edges (layer order is topological).
    reached = torch.zeros(graph.n_writers, dtype=torch.bool)
    reached[0] = True
    incoming = torch.zeros(graph.n_readers, dtype=torch.bool)
    for writer in range(1, graph.n_writers):
        readers = (reader_writer == writer).nonzero().flatten()
        incoming[readers] = (edges[:, readers] & reached[:, None]).any(0)
        reached[writer] = bool(incoming[readers].any())
    # Backward: which writers reach logits through kept edges from reached writers.
    useful_reader = torch.zeros(graph.n_readers, dtype=torch.bool)
    useful_reader[graph.logits_reader] = True
    useful = torch.zeros(graph.n_writers, dtype=torch.bool)
    for writer in range(graph.n_writers - 1, -1, -1):
        useful[writer] = bool((edges[writer] & useful_reader).any()) and bool(reached[writer])
        if writer > 0 and useful[writer]:
            useful_reader[(reader_writer == writer)] = True
    return edges & reached[:, None] & useful[:, None] & useful_reader[None, :]


def top_n(graph: Graph, scores: torch.Tensor, n: int) -> Circuit:
    """The n highest-|score| edges, then pruned (so the circuit can end up smaller than n)."""
    if n < 0:
        raise ValueError(f"top-n must be at least 0, got {n}")
    flat = scores.detach().abs().cpu().masked_fill(~graph.valid_edges, -1).flatten()
    n = min(n, graph.n_edges)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.topk(n).indices] = True
    return Circuit(graph, prune(graph, mask.view_as(scores.cpu())))


def threshold(graph: Graph, scores: torch.Tensor, tau: float) -> Circuit:
    """Edges with |score| >= tau, pruned."""
    return Circuit(graph, prune(graph, scores.detach().abs().cpu() >= tau))


def random_circuit(graph: Graph, n_edges: int, seed: int = 0) -> Circuit:
    """A connected random circuit of at least `n_edges` edges (it overshoots by less than one path):
    union of random paths walked back from `logits` to `input`, each step a uniformly chosen valid edge."""
    rng = random.Random(seed)
    edges = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    upstream = [graph.valid_edges[:, r].nonzero().flatten().tolist() for r in range(graph.n_readers)]
    readers_of = {
        w: (graph.writer_of_reader_node == w).nonzero().flatten().tolist() for w in range(graph.n_writers)
    }
    target = min(n_edges, graph.n_edges)
    while int(edges.sum()) < target:
        reader = graph.logits_reader
        while True:
            writer = rng.choice(upstream[reader])
            edges[writer, reader] = True
            if writer == 0:
                break
            reader = rng.choice(readers_of[writer])
    return Circuit(graph, edges)


def node_circuit(graph: Graph, kept_writers: torch.Tensor) -> Circuit:
    """The circuit of a set of writer nodes (plus `input`): every edge among them and to `logits`."""
    kept = kept_writers.cpu().clone()
    kept[0] = True
    node_of_reader = graph.writer_of_reader_node
    reader_kept = kept[node_of_reader.clamp(min=0)] | (node_of_reader < 0)
    return Circuit(graph, graph.valid_edges & kept[:, None] & reader_kept[None, :], level="node")


def top_n_nodes(graph: Graph, node_scores: torch.Tensor, n: int) -> Circuit:
    """The n heads and MLPs with the highest |score| (the input is always kept)."""
    if n < 0:
        raise ValueError(f"top-n must be at least 0, got {n}")
    ranked = node_scores.detach().abs().cpu().clone()
    ranked[0] = -1
    kept = torch.zeros(graph.n_writers, dtype=torch.bool)
    kept[ranked.topk(min(n, graph.n_writers - 1)).indices] = True
    return node_circuit(graph, kept)


def random_node_circuit(graph: Graph, n: int, seed: int = 0) -> Circuit:
    chosen = random.Random(seed).sample(range(1, graph.n_writers), min(n, graph.n_writers - 1))
    kept = torch.zeros(graph.n_writers, dtype=torch.bool)
    kept[chosen] = True
    return node_circuit(graph, kept)
