"""A stored circuit re-cut at another size from its stored score matrix, in numpy: no torch.

The API serves re-cuts and graph exports without the model stack, so the graph's index arithmetic
(atlas.core.graph.Graph, which holds torch tensors) and the selection rules (atlas.core.circuit: the n
highest-|score| edges, then pruned to input->logits paths; or the n highest-|score| heads and MLPs and the
subgraph they induce) are restated here over numpy arrays. tests/api/test_recut.py checks that both give the
same circuits on real scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.models import Circuit, Model, Run
from atlas.db.store import transaction

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class GraphIndex:
    """The graph's writers and readers as index spaces, exactly as atlas.core.graph.Graph numbers them."""

    n_layers: int
    n_heads: int

    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def logits_reader(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1)

    @property
    def n_readers(self) -> int:
        return self.logits_reader + 1

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
    def writer_of_reader_node(self) -> np.ndarray:
        """For each reader, the writer index of the same node (-1 for logits)."""
        return np.asarray([self.writer_index.get(node, -1) for node in self.reader_nodes], dtype=np.int64)

    @cached_property
    def readers_of_writer(self) -> list[np.ndarray]:
        of = self.writer_of_reader_node
        return [np.flatnonzero(of == w) for w in range(self.n_writers)]

    @cached_property
    def valid_edges(self) -> np.ndarray:
        """Bool `[n_writers, n_readers]`: True where the writer comes before the reader."""
        valid = np.zeros((self.n_writers, self.n_readers), dtype=bool)
        h = self.n_heads
        for layer in range(self.n_layers):
            first_reader = layer * (3 * h + 1)
            before_attention = 1 + layer * (h + 1)
            valid[:before_attention, first_reader : first_reader + 3 * h] = True
            valid[: before_attention + h, first_reader + 3 * h] = True
        valid[:, self.logits_reader] = True
        valid.flags.writeable = False
        return valid

    @property
    def n_edges(self) -> int:
        return int(self.valid_edges.sum())

    def edge_name(self, writer: int, reader: int) -> str:
        return f"{self.writer_names[writer]}->{self.reader_names[reader]}"


def prune(graph: GraphIndex, edges: np.ndarray) -> np.ndarray:
    """Keep only edges on some path from `input` to `logits` (atlas.core.circuit.prune)."""
    edges = edges & graph.valid_edges
    readers_of = graph.readers_of_writer
    reached = np.zeros(graph.n_writers, dtype=bool)
    reached[0] = True
    for writer in range(1, graph.n_writers):  # layer order is topological
        readers = readers_of[writer]
        reached[writer] = bool((edges[:, readers] & reached[:, None]).any())
    useful_reader = np.zeros(graph.n_readers, dtype=bool)
    useful_reader[graph.logits_reader] = True
    useful = np.zeros(graph.n_writers, dtype=bool)
    for writer in range(graph.n_writers - 1, -1, -1):
        useful[writer] = bool((edges[writer] & useful_reader).any()) and bool(reached[writer])
        if writer > 0 and useful[writer]:
            useful_reader[readers_of[writer]] = True
    return edges & reached[:, None] & useful[:, None] & useful_reader[None, :]


def _top_indices(values: np.ndarray, n: int) -> np.ndarray:
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= values.size:
        return np.arange(values.size)
    return np.argpartition(-values, n - 1)[:n]


def top_n_edges(graph: GraphIndex, scores: np.ndarray, n: int) -> np.ndarray:
    """The n highest-|score| valid edges, pruned: a bool `[n_writers, n_readers]` mask
    (atlas.core.circuit.top_n; edges tied at the cut may be chosen differently)."""
    if n < 0:
        raise CatalogueError(f"top-n must be at least 0, got {n}")
    flat = np.where(graph.valid_edges, np.abs(scores), -1.0).ravel()
    mask = np.zeros(flat.size, dtype=bool)
    mask[_top_indices(flat, min(n, graph.n_edges))] = True
    return prune(graph, mask.reshape(scores.shape))


def node_circuit_edges(graph: GraphIndex, kept_writers: np.ndarray) -> np.ndarray:
    """Every edge among a set of writer nodes (plus `input`) and to `logits`."""
    kept = kept_writers.copy()
    kept[0] = True
    of = graph.writer_of_reader_node
    reader_kept = kept[np.clip(of, 0, None)] | (of < 0)
    return graph.valid_edges & kept[:, None] & reader_kept[None, :]


def top_n_nodes(graph: GraphIndex, node_scores: np.ndarray, n: int) -> np.ndarray:
    """The n highest-|score| heads and MLPs and the subgraph they induce (atlas.core.circuit.top_n_nodes)."""
    if n < 0:
        raise CatalogueError(f"top-n must be at least 0, got {n}")
    ranked = np.abs(node_scores).astype(np.float64)
    ranked[0] = -1.0
    kept = np.zeros(graph.n_writers, dtype=bool)
    kept[_top_indices(ranked, min(n, graph.n_writers - 1))] = True
    return node_circuit_edges(graph, kept)


def nodes_of(graph: GraphIndex, edges: np.ndarray) -> list[str]:
    """Nodes joined by a kept edge, in graph order."""
    writers, readers = np.nonzero(edges)
    kept = {graph.writer_names[w] for w in writers.tolist()} | {
        graph.reader_nodes[r] for r in readers.tolist()
    }
    return [name for name in graph.node_names if name in kept]


@dataclass
class StoredScores:
    """A circuit's stored scores: the full `[n_writers, n_readers]` matrix (zero at invalid edges) for an
    edge-level circuit, or the node scores `[n_writers]` for a node-level one."""

    circuit_id: int
    level: str
    graph: GraphIndex
    d_model: int
    scores: np.ndarray


def load_scores(target: Engine | Session, circuit_id: int) -> StoredScores:
    """The stored score matrix of a circuit, as numpy (atlas.db.store.load_scores without torch)."""
    query = (
        select(
            Circuit.level,
            Circuit.layout,
            Circuit.score_rows,
            Circuit.score_cols,
            Circuit.score_dtype,
            Circuit.scores,
            Model.n_layers,
            Model.n_heads,
            Model.d_model,
        )
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .where(Circuit.id == circuit_id)
    )
    with transaction(target) as session:
        row = session.execute(query).one_or_none()
    if row is None:
        raise NotCatalogued(f"no circuit with id {circuit_id}")
    level, layout, rows, cols, dtype, blob, n_layers, n_heads, d_model = row
    graph = GraphIndex(n_layers, n_heads)
    values = np.frombuffer(blob, dtype=dtype).astype(np.float32)
    if layout == "nodes":
        return StoredScores(circuit_id, level, graph, d_model, values)
    matrix = np.zeros((rows, cols), dtype=np.float32)
    matrix[graph.valid_edges] = values  # row-major, as store.pack_scores wrote them
    return StoredScores(circuit_id, level, graph, d_model, matrix)


@dataclass
class Recut:
    circuit_id: int
    level: str
    top_n: int
    n_nodes: int
    n_edges: int
    nodes: list[dict[str, Any]]  # {node, score}: node-level circuits' scores; None at edge level
    edges: list[dict[str, Any]]  # {edge, score}, highest |score| first (score None at node level)


def recut(target: Engine | Session, circuit_id: int, n: int) -> Recut:
    """The stored circuit's top-n circuit at another size, from its stored scores (no recomputation):
    edge circuits keep the n highest-|score| edges then prune; node circuits keep the n best nodes."""
    stored = load_scores(target, circuit_id)
    graph = stored.graph
    if stored.level == "edge":
        edges = top_n_edges(graph, stored.scores, n)
        node_score: dict[str, float | None] = {}
    else:
        edges = top_n_nodes(graph, stored.scores, n)
        node_score = {
            name: float(s) for name, s in zip(graph.writer_names, stored.scores.tolist(), strict=True)
        }
    writers, readers = np.nonzero(edges)
    edge_rows = [
        {
            "edge": graph.edge_name(w, r),
            "score": float(stored.scores[w, r]) if stored.level == "edge" else None,
        }
        for w, r in zip(writers.tolist(), readers.tolist(), strict=True)
    ]
    if stored.level == "edge":
        edge_rows.sort(key=lambda e: -abs(float(e["score"] or 0.0)))
    nodes = nodes_of(graph, edges)
    return Recut(
        circuit_id=circuit_id,
        level=stored.level,
        top_n=n,
        n_nodes=len(nodes),
        n_edges=len(edge_rows),
        nodes=[{"node": name, "score": node_score.get(name)} for name in nodes],
        edges=edge_rows,
    )
