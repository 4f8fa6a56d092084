"""The computation graph circuits are cut from, as dense index spaces, and the selection rules over it, in
numpy (one implementation: the torch core, the catalogue's re-cuts and the queries all use it).

Writers (what adds to the residual stream): `input`, each head `a{L}.h{H}`, each MLP `m{L}`.
Readers (what reads the residual stream): each head's q, k and v inputs `a{L}.h{H}<q>`, each MLP `m{L}`,
and `logits`. An edge joins a writer to every later reader; edge scores live in a dense
`[n_writers, n_readers]` array and names are views over its indices (EAP-IG's convention).

Selection: the n best-ranked edges (ties: the lower flat index first), or every edge ranked at least a
threshold, then pruned to edges on some input -> logits path; at node level, the n best-ranked heads and MLPs
and the subgraph they induce. Two rankings (`RANKINGS`): "signed", the edges whose ablation lowers the metric
most first (a score is the estimated change of the metric when the edge is ablated, so the most negative
first), and "absolute", the largest |score| first (edges that raise the metric when ablated rank as high).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

QKV = ("q", "k", "v")
RANKINGS = ("signed", "absolute")


def rank_values(scores: np.ndarray, ranking: str = "absolute") -> np.ndarray:
    """What edges (or nodes) are ranked by, highest first: -score ("signed") or |score| ("absolute")."""
    values = np.asarray(scores, dtype=np.float64)
    if ranking == "signed":
        return -values
    if ranking == "absolute":
        return np.abs(values)
    raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")


@dataclass(frozen=True)
class GraphIndex:
    n_layers: int
    n_heads: int

    # Writer indices: 0 is `input`; layer L's heads follow at 1 + L*(H+1) + h, then its MLP.
    def head_writer(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    # Reader indices: layer L's block of 3H+1 is [q heads, k heads, v heads, mlp]; `logits` is last.
    def qkv_reader(self, layer: int, which: int, head: int) -> int:
        return layer * (3 * self.n_heads + 1) + which * self.n_heads + head

    def mlp_reader(self, layer: int) -> int:
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_reader(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1)

    @property
    def n_readers(self) -> int:
        return self.logits_reader + 1

    def writers_before_attention(self, layer: int) -> int:
        """How many writers feed layer `layer`'s heads: input and everything in earlier layers."""
        return 1 + layer * (self.n_heads + 1)

    def writers_before_mlp(self, layer: int) -> int:
        return self.writers_before_attention(layer) + self.n_heads

    @cached_property
    def writer_names(self) -> tuple[str, ...]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{head}" for head in range(self.n_heads)] + [f"m{layer}"]
        return tuple(names)

    @cached_property
    def reader_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for layer in range(self.n_layers):
            for which in QKV:
                names += [f"a{layer}.h{head}<{which}>" for head in range(self.n_heads)]
            names.append(f"m{layer}")
        return (*names, "logits")

    @cached_property
    def reader_nodes(self) -> tuple[str, ...]:
        """The node each reader belongs to (`a3.h5<q>` -> `a3.h5`)."""
        return tuple(name.split("<")[0] for name in self.reader_names)

    @cached_property
    def node_names(self) -> tuple[str, ...]:
        return (*self.writer_names, "logits")

    @cached_property
    def writer_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.writer_names)}

    @cached_property
    def reader_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.reader_names)}

    @cached_property
    def reader_writer(self) -> np.ndarray:
        """For each reader, the writer index of the same node (-1 for logits): int64 `[n_readers]`."""
        out = np.asarray([self.writer_index.get(node, -1) for node in self.reader_nodes], dtype=np.int64)
        out.flags.writeable = False
        return out

    @cached_property
    def readers_of_writer(self) -> tuple[np.ndarray, ...]:
        """For each writer, the indices of its node's readers (none for `input`)."""
        return tuple(np.flatnonzero(self.reader_writer == w) for w in range(self.n_writers))

    @cached_property
    def valid(self) -> np.ndarray:
        """Bool `[n_writers, n_readers]`, read-only: True where the writer comes before the reader."""
        valid = np.zeros((self.n_writers, self.n_readers), dtype=bool)
        for layer in range(self.n_layers):
            first = self.qkv_reader(layer, 0, 0)
            valid[: self.writers_before_attention(layer), first : first + 3 * self.n_heads] = True
            valid[: self.writers_before_mlp(layer), self.mlp_reader(layer)] = True
        valid[:, self.logits_reader] = True
        valid.flags.writeable = False
        return valid

    @cached_property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    @property
    def n_components(self) -> int:
        """Heads and MLPs: the nodes a node-level circuit chooses among."""
        return self.n_writers - 1

    def edge_name(self, writer: int, reader: int) -> str:
        return f"{self.writer_names[writer]}->{self.reader_names[reader]}"

    def parse_edge(self, name: str) -> tuple[int, int]:
        """(writer, reader) indices of an edge name such as `a0.h1->a2.h3<q>`."""
        writer, sep, reader = name.partition("->")
        if sep and writer in self.writer_index and reader in self.reader_index:
            return self.writer_index[writer], self.reader_index[reader]
        raise ValueError(f"no edge named {name!r} in a {self.n_layers}-layer, {self.n_heads}-head graph")


# ------------------------------------------------------------------------------------------------- pruning


def prune(graph: GraphIndex, edges: np.ndarray) -> np.ndarray:
    """Keep only edges on some path from `input` to `logits`. Layer by layer: a layer's heads read only
    earlier writers, its MLP reads those and the layer's heads."""
    edges = np.asarray(edges, dtype=bool) & graph.valid
    h = graph.n_heads
    reached = np.zeros(graph.n_writers, dtype=bool)
    reached[0] = True
    for layer in range(graph.n_layers):
        heads = slice(graph.head_writer(layer, 0), graph.head_writer(layer, 0) + h)
        first = graph.qkv_reader(layer, 0, 0)
        into_qkv = (edges[:, first : first + 3 * h] & reached[:, None]).any(0)
        reached[heads] = into_qkv.reshape(3, h).any(0)
        mlp = graph.mlp_writer(layer)
        reached[mlp] = bool((edges[:, graph.mlp_reader(layer)] & reached).any())
    useful_reader = np.zeros(graph.n_readers, dtype=bool)
    useful_reader[graph.logits_reader] = True
    useful = np.zeros(graph.n_writers, dtype=bool)
    for layer in range(graph.n_layers - 1, -1, -1):
        mlp = graph.mlp_writer(layer)
        useful[mlp] = reached[mlp] and bool((edges[mlp] & useful_reader).any())
        useful_reader[graph.mlp_reader(layer)] = useful[mlp]
        heads = slice(graph.head_writer(layer, 0), graph.head_writer(layer, 0) + h)
        useful[heads] = reached[heads] & (edges[heads] & useful_reader).any(1)
        first = graph.qkv_reader(layer, 0, 0)
        useful_reader[first : first + 3 * h] = np.tile(useful[heads], 3)
    useful[0] = bool((edges[0] & useful_reader).any())
    return edges & (reached & useful)[:, None] & useful_reader[None, :]


# ----------------------------------------------------------------------------------------------- selection


def edge_order(graph: GraphIndex, scores: np.ndarray, ranking: str = "absolute") -> np.ndarray:
    """Flat indices (writer * n_readers + reader) of the valid edges, best-ranked first; ties keep index
    order, so every caller cuts the same circuit from the same scores."""
    flat = rank_values(scores, ranking).ravel()
    valid = np.flatnonzero(graph.valid.ravel())
    return valid[np.argsort(-flat[valid], kind="stable")]


def mask_of(graph: GraphIndex, flat_indices: np.ndarray) -> np.ndarray:
    mask = np.zeros(graph.n_writers * graph.n_readers, dtype=bool)
    mask[flat_indices] = True
    return mask.reshape(graph.n_writers, graph.n_readers)


def top_n_edges(graph: GraphIndex, scores: np.ndarray, n: int, ranking: str = "absolute") -> np.ndarray:
    """The n best-ranked valid edges, pruned: a bool `[n_writers, n_readers]` mask (so the circuit can end
    up smaller than n)."""
    if n < 0:
        raise ValueError(f"top-n must be at least 0, got {n}")
    return prune(graph, mask_of(graph, edge_order(graph, scores, ranking)[:n]))


def threshold_edges(
    graph: GraphIndex, scores: np.ndarray, tau: float, ranking: str = "absolute"
) -> np.ndarray:
    """Valid edges ranked at least tau (|score| >= tau, or -score >= tau), pruned."""
    return prune(graph, rank_values(scores, ranking) >= tau)


def node_order(graph: GraphIndex, node_scores: np.ndarray, ranking: str = "absolute") -> np.ndarray:
    """Writer indices of the heads and MLPs, best-ranked first (ties: graph order); never `input`."""
    values = rank_values(node_scores, ranking)[1:]
    return 1 + np.argsort(-values, kind="stable")


def node_circuit_edges(graph: GraphIndex, kept_writers: np.ndarray) -> np.ndarray:
    """Every edge among a set of writer nodes (plus `input`) and to `logits`."""
    kept = np.asarray(kept_writers, dtype=bool).copy()
    kept[0] = True
    of = graph.reader_writer
    reader_kept = kept[np.clip(of, 0, None)] | (of < 0)
    return graph.valid & kept[:, None] & reader_kept[None, :]


def top_n_nodes(graph: GraphIndex, node_scores: np.ndarray, n: int, ranking: str = "absolute") -> np.ndarray:
    """The edges of the n best-ranked heads and MLPs (and `input`)."""
    if n < 0:
        raise ValueError(f"top-n must be at least 0, got {n}")
    kept = np.zeros(graph.n_writers, dtype=bool)
    kept[node_order(graph, node_scores, ranking)[:n]] = True
    return node_circuit_edges(graph, kept)


def nodes_of(graph: GraphIndex, edges: np.ndarray) -> list[str]:
    """Nodes joined by a kept edge, in graph order (`input`, heads and MLPs, `logits`)."""
    kept = np.zeros(graph.n_writers + 1, dtype=bool)
    writers, readers = np.nonzero(edges)
    kept[writers] = True
    of = graph.reader_writer[readers]
    kept[np.where(of < 0, graph.n_writers, of)] = True
    return [name for name, k in zip(graph.node_names, kept.tolist(), strict=True) if k]


def kept_components(graph: GraphIndex, edges: np.ndarray) -> np.ndarray:
    """Bool `[n_writers]`: writers joined by a kept edge (as a writer, or as a reader of one); `input` is
    never counted as a component."""
    mask = np.asarray(edges, dtype=bool)
    kept = np.asarray(mask.any(1))
    readers = mask.any(0)
    of = graph.reader_writer[readers]
    kept[of[of >= 0]] = True
    kept[0] = False
    return kept


# ------------------------------------------------------------------------------------------ random circuits


def random_circuit_edges(graph: GraphIndex, n_edges: int, rng: np.random.Generator) -> np.ndarray:
    """A connected random circuit of at least `n_edges` edges (it overshoots by less than one path): the
    union of random paths walked back from `logits` to `input`, each step a uniformly chosen valid edge
    into the current reader, then a uniformly chosen reader of that edge's writer."""
    target = min(n_edges, graph.n_edges)
    edges = np.zeros((graph.n_writers, graph.n_readers), dtype=bool)
    upstream = _upstream_counts(graph)
    readers_of = graph.readers_of_writer
    count = 0
    while count < target:
        reader = graph.logits_reader
        while True:
            # Valid writers of a reader are a prefix of the writer order.
            writer = int(rng.integers(upstream[reader]))
            if not edges[writer, reader]:
                edges[writer, reader] = True
                count += 1
            if writer == 0:
                break
            choices = readers_of[writer]
            reader = int(choices[rng.integers(len(choices))])
    return edges


def random_components(graph: GraphIndex, k: int, rng: np.random.Generator) -> np.ndarray:
    """Bool `[n_writers]`: the heads and MLPs of a connected random circuit grown, path by path as
    `random_circuit_edges` walks them, until it holds at least `k` of them (it overshoots by less than a
    path). `input` is never a component."""
    target = min(k, graph.n_components)
    upstream = _upstream_counts(graph)
    readers_of = graph.readers_of_writer
    kept = np.zeros(graph.n_writers, dtype=bool)
    count = 0
    while count < target:
        reader = graph.logits_reader
        while True:
            writer = int(rng.integers(upstream[reader]))
            if writer == 0:
                break
            if not kept[writer]:
                kept[writer] = True
                count += 1
            choices = readers_of[writer]
            reader = int(choices[rng.integers(len(choices))])
    return kept


def random_node_set(graph: GraphIndex, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bool `[n_writers]`: n heads and MLPs drawn uniformly without replacement (never `input`)."""
    kept = np.zeros(graph.n_writers, dtype=bool)
    kept[1 + rng.choice(graph.n_components, size=min(n, graph.n_components), replace=False)] = True
    return kept


def _upstream_counts(graph: GraphIndex) -> np.ndarray:
    """For each reader, how many writers can write to it (they are writers 0..count-1)."""
    return graph.valid.sum(0)
