"""A stored circuit re-cut at another size from its stored score matrix, in numpy: no torch.

The graph's index space and the selection rules are atlas.spec.graph's, the ones discovery used (the n
best-ranked edges, pruned to input->logits paths; or the n best-ranked heads and MLPs and the subgraph they
induce), with the run's own ranking (runs stored before rankings existed ranked by |score|).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.models import Circuit, Model, Run
from atlas.db.session import transaction
from atlas.spec.graph import GraphIndex, nodes_of, top_n_edges, top_n_nodes

__all__ = ["GraphIndex", "Recut", "StoredScores", "load_scores", "recut"]


@dataclass
class StoredScores:
    """A circuit's stored scores: the full `[n_writers, n_readers]` matrix (zero at invalid edges) for an
    edge-level circuit, or the node scores `[n_writers]` for a node-level one."""

    circuit_id: int
    level: str
    graph: GraphIndex
    d_model: int
    scores: np.ndarray
    ranking: str = "absolute"  # the run's (runs stored before rankings existed: absolute)


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
            Run.params,
        )
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .where(Circuit.id == circuit_id)
    )
    with transaction(target) as session:
        row = session.execute(query).one_or_none()
    if row is None:
        raise NotCatalogued(f"no circuit with id {circuit_id}")
    level, layout, rows, cols, dtype, blob, n_layers, n_heads, d_model, params = row
    graph = GraphIndex(n_layers, n_heads)
    ranking = (params or {}).get("ranking", "absolute")
    values = np.frombuffer(blob, dtype=dtype).astype(np.float32)
    if layout == "nodes":
        return StoredScores(circuit_id, level, graph, d_model, values, ranking)
    matrix = np.zeros((rows, cols), dtype=np.float32)
    matrix[graph.valid] = values  # row-major, as store.pack_scores wrote them
    return StoredScores(circuit_id, level, graph, d_model, matrix, ranking)


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
    edge circuits keep the n best-ranked edges then prune; node circuits keep the n best nodes."""
    if n < 0:
        raise CatalogueError(f"top-n must be at least 0, got {n}")
    stored = load_scores(target, circuit_id)
    graph = stored.graph
    if stored.level == "edge":
        edges = top_n_edges(graph, stored.scores, n, stored.ranking)
        node_score: dict[str, float | None] = {}
    else:
        edges = top_n_nodes(graph, stored.scores, n, stored.ranking)
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
