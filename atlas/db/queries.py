"""Read-side queries over the catalogue. Plain functions returning JSON-able dataclasses; no torch.

Circuits compared by their heads and MLPs (`input` and `logits` are in every circuit and say nothing) and by
their edges (`writer->reader<port>` names), as kept in the circuit (not the pruned-away candidates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from itertools import combinations
from typing import Any

from sqlalchemy import Engine, and_, select
from sqlalchemy.orm import Session, aliased

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.models import (
    MEMBER_DTYPE,
    Circuit,
    CircuitEdge,
    CircuitNode,
    Component,
    Evaluation,
    HeadRole,
    Model,
    Relation,
    Run,
)
from atlas.db.session import transaction
from atlas.spec.params import UNINFORMATIVE_HIT_RANDOM


@dataclass
class CircuitSummary:
    id: int
    model: str
    relation: str
    category: str
    method: str
    level: str
    ig_steps: int
    metric: str
    selection: str
    top_n: int
    threshold: float
    n_nodes: int
    n_edges: int
    hit_original: float | None
    hit_circuit: float | None
    hit_random: float | None
    faithfulness: float | None
    created_at: str
    # Size by faithfulness: the target and whether it was met (None for a fixed size), and the circuit on
    # held-out facts: its faithfulness, and a random circuit's of the same size.
    target_faithfulness: float | None = None
    target_met: bool | None = None
    faithfulness_heldout: float | None = None
    faithfulness_random_heldout: float | None = None
    top1_circuit_heldout: float | None = None


@dataclass
class Page:
    items: list[CircuitSummary]
    next_after: int | None  # pass as `after` for the next page; None: this was the last page

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Comparison:
    circuits: list[CircuitSummary]
    shared_nodes: list[str]  # heads and MLPs in every circuit, in graph order
    shared_edges: list[str]
    node_jaccard: float  # |intersection| / |union| over all the circuits
    edge_jaccard: float
    pairwise: list[dict[str, Any]] = field(default_factory=list)  # {a, b, node_jaccard, edge_jaccard}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OverlapMatrix:
    circuits: list[CircuitSummary]
    node_jaccard: list[list[float]]
    edge_jaccard: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        # The matrices as they are (shared, not copied): `asdict` would rebuild n * n floats one by one.
        return {
            "circuits": [asdict(c) for c in self.circuits],
            "node_jaccard": self.node_jaccard,
            "edge_jaccard": self.edge_jaccard,
        }


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


@lru_cache(maxsize=1)  # built once: a select is immutable, and building it costs more than running it
def _summary_select() -> Any:
    """The columns of a CircuitSummary, in its fields' order, with the joins they need: a Core select (rows of
    plain values, no ORM entities; not the score matrix, member sets or null, which a summary does not show).
    `_summary_of` makes a row's first SUMMARY_WIDTH values a CircuitSummary; add columns after them."""
    discovery, heldout = aliased(Evaluation), aliased(Evaluation)
    return (
        select(
            Circuit.id,
            Model.name,
            Relation.name,
            Relation.category,
            Run.method,
            Circuit.level,
            Run.ig_steps,
            Run.metric,
            Run.selection,
            Run.top_n,
            Run.threshold,
            Circuit.n_nodes,
            Circuit.n_edges,
            discovery.hit_original,
            discovery.hit_circuit,
            discovery.hit_random,
            discovery.faithfulness,
            Circuit.created_at,
            Run.params["target_faithfulness"].as_float(),
            Circuit.target_met,
            heldout.faithfulness,
            heldout.faithfulness_random,
            heldout.top1_circuit,
        )
        .select_from(Circuit)
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .join(Relation, Run.relation_id == Relation.id)
        .outerjoin(discovery, and_(discovery.circuit_id == Circuit.id, discovery.split == "discovery"))
        .outerjoin(heldout, and_(heldout.circuit_id == Circuit.id, heldout.split == "heldout"))
    )


SUMMARY_FIELDS = tuple(f.name for f in fields(CircuitSummary))  # _summary_select's columns, in this order
SUMMARY_WIDTH = len(SUMMARY_FIELDS)
_CREATED = SUMMARY_FIELDS.index("created_at")


def _summary_of(row: Sequence[Any]) -> CircuitSummary:
    values = list(row[:SUMMARY_WIDTH])
    values[_CREATED] = values[_CREATED].isoformat()
    return CircuitSummary(*values)


def list_circuits(
    target: Engine | Session,
    model: str | None = None,
    relation: str | None = None,
    category: str | None = None,
    method: str | None = None,
    limit: int = 50,
    after: int | None = None,
) -> Page:
    """Catalogued circuits matching the filters, by id, `limit` per page; keyset pagination: pass the page's
    `next_after` as `after` for the next one."""
    if limit < 1:
        raise CatalogueError(f"limit must be at least 1, got {limit}")
    query = _summary_select()
    for column, value in (
        (Model.name, model),
        (Relation.name, relation),
        (Relation.category, category),
        (Run.method, method),
    ):
        if value is not None:
            query = query.where(column == value)
    if after is not None:
        query = query.where(Circuit.id > after)
    query = query.order_by(Circuit.id).limit(limit + 1)
    with transaction(target) as session:
        rows = session.connection().execute(query).all()
    items = [_summary_of(row) for row in rows[:limit]]
    return Page(items, items[-1].id if len(rows) > limit else None)


def _circuit_sets(
    session: Session, ids: Sequence[int]
) -> tuple[list[CircuitSummary], dict[int, set[str]], dict[int, set[str]], list[str]]:
    connection = session.connection()  # Core rows
    summaries = {
        row[0]: _summary_of(row) for row in connection.execute(_summary_select().where(Circuit.id.in_(ids)))
    }
    missing = [i for i in ids if i not in summaries]
    if missing:
        raise NotCatalogued(f"no circuit with id {', '.join(map(str, missing))}")
    nodes: dict[int, set[str]] = {i: set() for i in ids}
    order: dict[str, tuple[int, int]] = {}  # input/logits excluded: every head and MLP has a layer
    for circuit_id, name, layer, head in connection.execute(
        select(CircuitNode.circuit_id, Component.name, Component.layer, Component.head)
        .join(Component, CircuitNode.component_id == Component.id)
        .where(CircuitNode.circuit_id.in_(ids), CircuitNode.in_circuit, Component.kind.in_(("head", "mlp")))
    ):
        nodes[circuit_id].add(name)
        order[name] = (layer or 0, head if head is not None else 1 << 30)
    writer, reader = aliased(Component), aliased(Component)
    edges: dict[int, set[str]] = {i: set() for i in ids}
    for circuit_id, w, r, port in connection.execute(
        select(CircuitEdge.circuit_id, writer.name, reader.name, CircuitEdge.port)
        .join(writer, CircuitEdge.writer_id == writer.id)
        .join(reader, CircuitEdge.reader_id == reader.id)
        .where(CircuitEdge.circuit_id.in_(ids), CircuitEdge.in_circuit)
    ):
        edges[circuit_id].add(f"{w}->{r}<{port}>" if port else f"{w}->{r}")
    graph_order = sorted(order, key=lambda name: order[name])
    return [summaries[i] for i in ids], nodes, edges, graph_order


def compare_circuits(target: Engine | Session, ids: Sequence[int]) -> Comparison:
    """Shared heads/MLPs and edges of two or more circuits, with the Jaccard index of their node sets and of
    their edge sets (over all of them, and for each pair)."""
    ids = list(dict.fromkeys(ids))
    if len(ids) < 2:
        raise CatalogueError("compare needs at least two different circuit ids")
    with transaction(target) as session:
        summaries, nodes, edges, order = _circuit_sets(session, ids)
    shared_nodes = set.intersection(*nodes.values())
    shared_edges = set.intersection(*edges.values())
    all_nodes, all_edges = set.union(*nodes.values()), set.union(*edges.values())
    return Comparison(
        circuits=summaries,
        shared_nodes=[n for n in order if n in shared_nodes],
        shared_edges=sorted(shared_edges),
        node_jaccard=len(shared_nodes) / len(all_nodes) if all_nodes else 1.0,
        edge_jaccard=len(shared_edges) / len(all_edges) if all_edges else 1.0,
        pairwise=[
            {
                "a": a,
                "b": b,
                "node_jaccard": jaccard(nodes[a], nodes[b]),
                "edge_jaccard": jaccard(edges[a], edges[b]),
            }
            for a, b in combinations(ids, 2)
        ],
    )


QKV = {"q": 0, "k": 1, "v": 2}


def _writer_index(kind: str, layer: int | None, head: int | None, n_heads: int) -> int:
    """atlas.core.graph.Graph's writer index of a component (restated: this module does not import torch)."""
    if kind == "input":
        return 0
    return 1 + (layer or 0) * (n_heads + 1) + (head if kind == "head" and head is not None else n_heads)


def _reader_index(
    kind: str, layer: int | None, head: int | None, port: str, n_layers: int, n_heads: int
) -> int:
    """Graph's reader index of a component's input (`port` q, k or v of a head, '' otherwise)."""
    if kind == "logits":
        return n_layers * (3 * n_heads + 1)
    base = (layer or 0) * (3 * n_heads + 1)
    return base + QKV[port] * n_heads + (head or 0) if kind == "head" else base + 3 * n_heads


def _member_sets_from_rows(
    connection: Any, shapes: dict[int, tuple[int, int]], edges: bool = True
) -> dict[int, tuple[list[int], list[int]]]:
    """`Circuit.node_set` and `edge_set` (as lists) of circuits whose columns are NULL (a row written by
    hand), from their in-circuit node and edge rows: {circuit id: (writer indices, flat edge indices)};
    `edges` False: the nodes only (the edge lists left empty)."""
    ids = list(shapes)
    found: dict[int, tuple[list[int], list[int]]] = {i: ([], []) for i in ids}
    # Rows by circuit id only (the primary key's order), components looked up here: joined in SQL, SQLite
    # would probe the node primary key once per component and id instead.
    components = {
        row[0]: row[1:]
        for row in connection.execute(select(Component.id, Component.kind, Component.layer, Component.head))
    }
    for circuit_id, component_id in connection.execute(
        select(CircuitNode.circuit_id, CircuitNode.component_id).where(
            CircuitNode.circuit_id.in_(ids), CircuitNode.in_circuit
        )
    ):
        kind, layer, head = components[component_id]
        if kind in ("head", "mlp"):
            found[circuit_id][0].append(_writer_index(kind, layer, head, shapes[circuit_id][1]))
    if not edges:
        return found
    for circuit_id, writer_id, reader_id, port in connection.execute(
        select(CircuitEdge.circuit_id, CircuitEdge.writer_id, CircuitEdge.reader_id, CircuitEdge.port).where(
            CircuitEdge.circuit_id.in_(ids), CircuitEdge.in_circuit
        )
    ):
        n_layers, n_heads = shapes[circuit_id]
        n_readers = n_layers * (3 * n_heads + 1) + 1
        (w_kind, w_layer, w_head), (r_kind, r_layer, r_head) = components[writer_id], components[reader_id]
        w = _writer_index(w_kind, w_layer, w_head, n_heads)
        r = _reader_index(r_kind, r_layer, r_head, port, n_layers, n_heads)
        found[circuit_id][1].append(w * n_readers + r)
    return found


def _members(blob: bytes | None) -> Any:
    """A `Circuit.node_set` or `edge_set` (not NULL) as an int32 array."""
    import numpy as np

    assert blob is not None
    return np.frombuffer(blob, dtype=MEMBER_DTYPE)


def _canonical(nodes: Any, edges: Any, shape: tuple[int, int], canonical: tuple[int, int]) -> tuple[Any, Any]:
    """Writer and flat edge indices of a `shape` = (n_layers, n_heads) graph as the indices of the same names
    in the `canonical` graph (at least as many layers and heads): circuits of models of one name but of
    other shapes become comparable by name."""
    import numpy as np

    (n_layers, n_heads), (c_layers, c_heads) = shape, canonical

    def writers(w: Any) -> Any:
        layer, slot = np.divmod(w - 1, n_heads + 1)  # slot n_heads: the MLP
        slot = np.where(slot == n_heads, c_heads, slot)
        return np.where(w == 0, 0, 1 + layer * (c_heads + 1) + slot)

    def readers(r: Any) -> Any:
        layer, slot = np.divmod(r, 3 * n_heads + 1)  # slot: which * n_heads + head, or 3 * n_heads (MLP)
        which, head = np.divmod(slot, max(n_heads, 1))
        slot = np.where(slot == 3 * n_heads, 3 * c_heads, which * c_heads + head)
        return np.where(
            r == n_layers * (3 * n_heads + 1), c_layers * (3 * c_heads + 1), layer * (3 * c_heads + 1) + slot
        )

    n_readers, c_readers = n_layers * (3 * n_heads + 1) + 1, c_layers * (3 * c_heads + 1) + 1
    w, r = np.divmod(edges, n_readers)
    return writers(nodes), writers(w) * c_readers + readers(r)


# A key (node or edge) in at most n / PAIRWISE_SHARE of the n circuits adds to the intersections pair by pair;
# a more common one through a matrix product (the product costs n * n per key, the pairs count**2).
PAIRWISE_SHARE = 12


def _jaccard_matrix(rows: Any, keys: Any, n: int) -> Any:
    """|a & b| / |a | b| between the circuits' key sets (row i: circuit i; (row, key) pairs unique), exactly
    as `jaccard`, as an [n, n] float64 array. Intersections: the pairs of circuits sharing each rare key are
    counted (integers), and the common keys' 0/1 membership matrix multiplied by its transpose (float32,
    exact: counts far below 2**24). A key in one circuit adds to no intersection but its own."""
    import numpy as np

    if not keys.size:
        return np.ones((n, n))  # every set empty
    sizes = np.bincount(rows, minlength=n).astype(np.float64)
    if keys.max() < 1 << 24:  # the keys index their counts directly (no sort)
        column, count = keys, np.bincount(keys)
    else:
        _, column, count = np.unique(keys, return_inverse=True, return_counts=True)
    limit = max(2, n // PAIRWISE_SHARE)
    held = count[column]  # per member: how many circuits hold its key
    rare = np.flatnonzero((held >= 2) & (held <= limit))
    # The rare keys' members by how many circuits hold the key, then by key: each key's c circuits in a run.
    rare = rare[np.argsort(held[rare] * (int(column.max()) + 1) + column[rare])]
    rare_held, rare_rows = held[rare], rows[rare]
    bounds = np.searchsorted(rare_held, np.arange(2, limit + 2))
    pairs = [np.zeros(0, dtype=np.int64)]
    for c, start, end in zip(range(2, limit + 1), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if end > start:
            block = rare_rows[start:end].reshape(-1, c)  # the c circuits of each key held by c
            pairs.append((block[:, :, None] * n + block[:, None, :]).ravel())
    inter = np.bincount(np.concatenate(pairs), minlength=n * n).reshape(n, n).astype(np.float64)
    common = count > limit
    if common.any():
        common_column = np.cumsum(common) - 1  # the common keys, numbered
        member = np.zeros((n, int(common.sum())), dtype=np.float32)
        selected = held > limit
        member[rows[selected], common_column[column[selected]]] = 1.0
        inter += member @ member.T
    np.fill_diagonal(inter, sizes)
    union = sizes[:, None] + sizes[None, :] - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def overlap_matrix(
    target: Engine | Session, model: str, category: str | None = None, method: str | None = None
) -> OverlapMatrix:
    """Jaccard of nodes and of edges between every pair of the model's circuits (rows in circuit id order).

    Reads one row per circuit: its summary and its member sets (`Circuit.node_set`, `edge_set`: sorted graph
    indices of its heads/MLPs and of its edges), not its node and edge rows. Models of one name are compared
    by component names, so circuits of a model name with several graph shapes are mapped to one graph's
    indices first."""
    import numpy as np

    summary_query = _summary_select().add_columns(
        Model.n_layers, Model.n_heads, Circuit.node_set, Circuit.edge_set
    )
    summary_query = summary_query.where(Model.name == model)
    if category is not None:
        summary_query = summary_query.where(Relation.category == category)
    if method is not None:
        summary_query = summary_query.where(Run.method == method)
    n_fields = SUMMARY_WIDTH
    with transaction(target) as session:
        connection = session.connection()  # Core rows: no ORM entities to build
        rows: list[Any] = list(connection.execute(summary_query.order_by(Circuit.id)))
        if not rows:
            return OverlapMatrix([], [], [])
        unfilled = {
            row[0]: (row[n_fields], row[n_fields + 1]) for row in rows if row[-1] is None or row[-2] is None
        }
        from_rows = _member_sets_from_rows(connection, unfilled) if unfilled else {}
    summaries = [_summary_of(row) for row in rows]
    n = len(rows)
    node_parts, edge_parts = [], []
    for row in rows:
        if row[0] in from_rows:
            nodes, edges = from_rows[row[0]]
            node_parts.append(np.asarray(sorted(set(nodes)), dtype=np.int64))
            edge_parts.append(np.asarray(sorted(set(edges)), dtype=np.int64))
        else:
            node_parts.append(_members(row[-2]))
            edge_parts.append(_members(row[-1]))
    shapes = [(row[n_fields], row[n_fields + 1]) for row in rows]
    if len(set(shapes)) > 1:  # one model name, several graph shapes: compare by name, in one index space
        canonical = (max(s[0] for s in shapes), max(s[1] for s in shapes))
        for i, shape in enumerate(shapes):
            node_parts[i], edge_parts[i] = _canonical(
                node_parts[i].astype(np.int64), edge_parts[i].astype(np.int64), shape, canonical
            )

    def members(parts: list[Any]) -> tuple[Any, Any]:
        """The circuit row of each member, and the members, as flat arrays."""
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=n)
        return np.repeat(np.arange(n), lengths), np.concatenate(parts).astype(np.int64)

    return OverlapMatrix(
        circuits=summaries,
        node_jaccard=_jaccard_matrix(*members(node_parts), n).tolist(),
        edge_jaccard=_jaccard_matrix(*members(edge_parts), n).tolist(),
    )


def circuit_detail(target: Engine | Session, circuit_id: int) -> dict[str, Any]:
    """One circuit: its summary, run parameters, evaluations, nodes in it and edges in it with scores and
    bootstrap stability (the share of resamples keeping the member; None without a bootstrap)."""
    writer, reader = aliased(Component), aliased(Component)
    with transaction(target) as session:
        row = (
            session.connection()
            .execute(_summary_select().add_columns(Circuit.run_id).where(Circuit.id == circuit_id))
            .one_or_none()
        )
        if row is None:
            raise NotCatalogued(f"no circuit with id {circuit_id}")
        summary = _summary_of(row)
        run = session.get_one(Run, row[SUMMARY_WIDTH])
        nodes = [
            {"node": name, "score": score, "stability": stability}
            | ({} if role is None else {"role": role, "subject_attention": sa, "relation_attention": ra})
            for name, score, stability, role, sa, ra in session.execute(
                select(
                    Component.name,
                    CircuitNode.score,
                    CircuitNode.stability,
                    HeadRole.role,
                    HeadRole.subject_attention,
                    HeadRole.relation_attention,
                )
                .join(Component, CircuitNode.component_id == Component.id)
                .outerjoin(
                    HeadRole,
                    and_(HeadRole.circuit_id == circuit_id, HeadRole.component_id == Component.id),
                )
                .where(CircuitNode.circuit_id == circuit_id, CircuitNode.in_circuit)
                .order_by(Component.id)
            )
        ]
        roles, search, template, stability = session.execute(
            select(Circuit.roles, Circuit.search, Circuit.template, Circuit.stability).where(
                Circuit.id == circuit_id
            )
        ).one()
        edges = [
            {"edge": f"{w}->{r}<{port}>" if port else f"{w}->{r}", "score": score, "stability": stability}
            for w, r, port, score, stability in session.execute(
                select(writer.name, reader.name, CircuitEdge.port, CircuitEdge.score, CircuitEdge.stability)
                .join(writer, CircuitEdge.writer_id == writer.id)
                .join(reader, CircuitEdge.reader_id == reader.id)
                .where(CircuitEdge.circuit_id == circuit_id, CircuitEdge.in_circuit)
            )
        ]
        edges.sort(key=lambda e: -abs(float(e["score"] or 0.0)))
        evaluations = {
            e.split: {
                "n_facts": e.n_facts,
                "hit_at_10": {"original": e.hit_original, "circuit": e.hit_circuit, "random": e.hit_random},
                # A random circuit reaching Hit@10 this often: Hit@10 cannot tell this circuit from one.
                "hit_at_10_informative": not e.hit_random >= UNINFORMATIVE_HIT_RANDOM,
                "top1": {"original": e.top1_original, "circuit": e.top1_circuit, "random": e.top1_random},
                "faithfulness": e.faithfulness,
                "faithfulness_random": e.faithfulness_random,
                "curve": None if e.curve is None else {"area": e.curve_area, "points": e.curve},
            }
            for e in session.scalars(select(Evaluation).where(Evaluation.circuit_id == circuit_id))
        }
        params = {
            key: getattr(run, key)
            for key in (
                "ablation",
                "template",
                "seed",
                "max_facts",
                "heldout_fraction",
                "known_only",
                "corpus_hash",
                "code_version",
                "status",
                "facts",
                "seconds",
            )
        }
    return {
        **asdict(summary),
        "run": {"id": run.id, "params": run.params, "params_key": run.params_key, **params},
        "evaluations": evaluations,
        "search": search,
        "template": template,
        "stability": stability,
        "roles": roles,
        "nodes": nodes,
        "edges": edges,
    }
