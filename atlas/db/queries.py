"""Read-side queries over the catalogue. Plain functions returning JSON-able dataclasses; no torch.

Circuits compared by their heads and MLPs (`input` and `logits` are in every circuit and say nothing) and by
their edges (`writer->reader<port>` names), as kept in the circuit (not the pruned-away candidates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from itertools import combinations
from typing import Any

from sqlalchemy import Engine, String, and_, cast, func, select
from sqlalchemy.orm import Session, aliased

from atlas.db import CatalogueError
from atlas.db.models import Circuit, CircuitEdge, CircuitNode, Component, Evaluation, Model, Relation, Run
from atlas.db.store import transaction


@dataclass
class RecurringComponent:
    component: str
    kind: str
    layer: int | None
    head: int | None
    n_relations: int
    relations: list[str]


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
        return asdict(self)


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def recurring_components(
    target: Engine | Session,
    model: str,
    category: str | None = None,
    method: str | None = None,
    min_count: int = 2,
) -> list[RecurringComponent]:
    """Heads and MLPs of `model` (by name) in the circuits of at least `min_count` relations, most relations
    first, then in graph order. Filters: the relations' category, the runs' method."""
    # Distinct (component id, relation id) pairs, small integers, named afterwards: DISTINCT over names is
    # about twice as slow on a large catalogue.
    query = (
        select(CircuitNode.component_id, Run.relation_id)
        .distinct()
        .select_from(CircuitNode)
        .join(Circuit, CircuitNode.circuit_id == Circuit.id)
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .where(CircuitNode.in_circuit, Model.name == model)
    )
    if category is not None:
        query = query.join(Relation, Run.relation_id == Relation.id).where(Relation.category == category)
    if method is not None:
        query = query.where(Run.method == method)
    components_query = (
        select(Component.id, Component.name, Component.kind, Component.layer, Component.head)
        .join(Model, Component.model_id == Model.id)
        .where(Model.name == model, Component.kind.in_(("head", "mlp")))
    )
    with transaction(target) as session:
        connection = session.connection()
        pairs = connection.execute(query).all()
        if not pairs:
            return []
        components = {row[0]: row[1:] for row in connection.execute(components_query)}
        relation_names = dict(connection.execute(select(Relation.id, Relation.name)).all())
    found: dict[str, RecurringComponent] = {}
    relations: dict[str, set[str]] = {}  # by name: models of one name (other weights) count once
    for component_id, relation_id in pairs:
        component = components.get(component_id)
        if component is None:  # input, logits
            continue
        name, kind, layer, head = component
        found.setdefault(name, RecurringComponent(name, kind, layer, head, 0, []))
        relations.setdefault(name, set()).add(relation_names[relation_id])
    for name, entry in found.items():
        entry.relations = sorted(relations[name])
        entry.n_relations = len(entry.relations)

    def graph_order(c: RecurringComponent) -> tuple[int, int]:
        return (c.layer or 0, c.head if c.head is not None else 1 << 30)

    kept = [c for c in found.values() if c.n_relations >= min_count]
    return sorted(kept, key=lambda c: (-c.n_relations, *graph_order(c)))


def _summary_query() -> Any:
    discovery = aliased(Evaluation)
    return (
        select(Circuit, Run, Model.name, Relation.name, Relation.category, discovery)
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .join(Relation, Run.relation_id == Relation.id)
        .outerjoin(discovery, and_(discovery.circuit_id == Circuit.id, discovery.split == "discovery"))
    )


def _summary(row: Any) -> CircuitSummary:
    circuit, run, model, relation, category, evaluation = row
    return CircuitSummary(
        id=circuit.id,
        model=model,
        relation=relation,
        category=category,
        method=run.method,
        level=circuit.level,
        ig_steps=run.ig_steps,
        metric=run.metric,
        selection=run.selection,
        top_n=run.top_n,
        threshold=run.threshold,
        n_nodes=circuit.n_nodes,
        n_edges=circuit.n_edges,
        hit_original=evaluation.hit_original if evaluation else None,
        hit_circuit=evaluation.hit_circuit if evaluation else None,
        hit_random=evaluation.hit_random if evaluation else None,
        faithfulness=evaluation.faithfulness if evaluation else None,
        created_at=circuit.created_at.isoformat(),
    )


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
    query = _summary_query()
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
        rows = session.execute(query).all()
        items = [_summary(row) for row in rows[:limit]]
    return Page(items, items[-1].id if len(rows) > limit else None)


def _circuit_sets(
    session: Session, ids: Sequence[int]
) -> tuple[list[CircuitSummary], dict[int, set[str]], dict[int, set[str]], list[str]]:
    summaries = {
        row[0].id: _summary(row) for row in session.execute(_summary_query().where(Circuit.id.in_(ids)))
    }
    missing = [i for i in ids if i not in summaries]
    if missing:
        raise CatalogueError(f"no circuit with id {', '.join(map(str, missing))}")
    nodes: dict[int, set[str]] = {i: set() for i in ids}
    order: dict[str, tuple[int, int]] = {}  # input/logits excluded: every head and MLP has a layer
    for circuit_id, name, layer, head in session.execute(
        select(CircuitNode.circuit_id, Component.name, Component.layer, Component.head)
        .join(Component, CircuitNode.component_id == Component.id)
        .where(CircuitNode.circuit_id.in_(ids), CircuitNode.in_circuit, Component.kind.in_(("head", "mlp")))
    ):
        nodes[circuit_id].add(name)
        order[name] = (layer or 0, head if head is not None else 1 << 30)
    writer, reader = aliased(Component), aliased(Component)
    edges: dict[int, set[str]] = {i: set() for i in ids}
    for circuit_id, w, r, port in session.execute(
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


def overlap_matrix(
    target: Engine | Session, model: str, category: str | None = None, method: str | None = None
) -> OverlapMatrix:
    """Jaccard of nodes and of edges between every pair of the model's circuits (rows in circuit id order)."""
    import numpy as np

    query = select(Circuit.id).join(Run).join(Model).join(Relation).where(Model.name == model)
    if category is not None:
        query = query.where(Relation.category == category)
    if method is not None:
        query = query.where(Run.method == method)
    discovery = aliased(Evaluation)
    summary_columns = (
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
    )
    summary_fields = [f.name for f in fields(CircuitSummary)]  # the columns above, in this order
    summary_query = query.with_only_columns(*summary_columns).outerjoin(
        discovery, and_(discovery.circuit_id == Circuit.id, discovery.split == "discovery")
    )
    # Each circuit's heads and MLPs and its edges come back as one string of ids per circuit (and port),
    # parsed by numpy: far fewer rows and Python objects than a row per node or edge.
    selected = query.with_only_columns(Circuit.id)
    nodes_query = (
        select(
            CircuitNode.circuit_id,
            func.count(),
            func.aggregate_strings(cast(CircuitNode.component_id, String), ","),
        )
        .join(Component, CircuitNode.component_id == Component.id)
        .where(
            CircuitNode.circuit_id.in_(selected), CircuitNode.in_circuit, Component.kind.in_(("head", "mlp"))
        )
        .group_by(CircuitNode.circuit_id)
    )
    pair = cast(CircuitEdge.writer_id, String) + "," + cast(CircuitEdge.reader_id, String)
    edges_query = (
        select(CircuitEdge.circuit_id, CircuitEdge.port, func.count(), func.aggregate_strings(pair, ","))
        .where(CircuitEdge.circuit_id.in_(selected), CircuitEdge.in_circuit)
        .group_by(CircuitEdge.circuit_id, CircuitEdge.port)
    )
    # Circuits are compared by names (models of one name may differ in weights, so in component ids).
    names_query = select(Component.id, Component.name).join(Model).where(Model.name == model)
    with transaction(target) as session:
        connection = session.connection()  # Core rows: no ORM entities to build
        rows: list[Any] = [tuple(row) for row in connection.execute(summary_query.order_by(Circuit.id))]
        summaries = [
            CircuitSummary(**dict(zip(summary_fields, (*row[:-1], row[-1].isoformat()), strict=True)))
            for row in rows
        ]
        if not summaries:
            return OverlapMatrix([], [], [])
        names = connection.execute(names_query).all()
        nodes = connection.execute(nodes_query).all()
        edges = connection.execute(edges_query).all()
    circuit_ids = np.asarray([c.id for c in summaries], dtype=np.int64)  # sorted: rows in circuit id order
    index_of_name: dict[str, int] = {}
    name_of_component = np.zeros(max((i for i, _ in names), default=0) + 1, dtype=np.int64)
    for component_id, name in names:
        name_of_component[component_id] = index_of_name.setdefault(name, len(index_of_name))
    n_names = len(index_of_name)

    def parse(groups: Sequence[Any], width: int) -> tuple[Any, Any]:
        """The circuit row of each id (tuple) in the groups' strings, and the ids as [n, width]."""
        counts = np.asarray([g[-2] for g in groups], dtype=np.int64)
        rows = np.repeat(
            np.searchsorted(circuit_ids, np.asarray([g[0] for g in groups], dtype=np.int64)), counts
        )
        text = ",".join(g[-1] for g in groups)
        values = np.fromstring(text, dtype=np.int64, sep=",") if text else np.zeros(0, dtype=np.int64)
        return rows, name_of_component[values.reshape(-1, width)]

    def jaccard_matrix(rows: Any, keys: Any) -> list[list[float]]:
        """|a & b| / |a | b| between the circuits' key sets (row i: circuit i), exactly as `jaccard`:
        intersections by one product of 0/1 matrices over the keys in two circuits or more."""
        n = len(summaries)
        sizes = np.bincount(rows, minlength=n).astype(np.float64)  # (circuit, key) pairs are unique
        if keys.size and keys.max() < 1 << 24:  # the keys index their counts directly (no sort)
            column, count = keys, np.bincount(keys)
        else:
            _, column, count = np.unique(keys, return_inverse=True, return_counts=True)
        in_two = count >= 2  # a key in one circuit only adds to no intersection but its own
        shared_column = np.cumsum(in_two) - 1  # the keys in two circuits or more, numbered
        shared = in_two[column]
        member = np.zeros((n, int(in_two.sum())), dtype=np.float32)
        member[rows[shared], shared_column[column[shared]]] = 1.0
        inter = (member @ member.T).astype(np.float64)  # exact: counts far below 2**24
        np.fill_diagonal(inter, sizes)
        union = sizes[:, None] + sizes[None, :] - inter
        result = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
        return result.tolist()

    node_rows, node_names = parse(nodes, 1)
    edge_rows, edge_names = parse(edges, 2)
    ports: dict[str, int] = {}
    port_codes = np.repeat(
        np.asarray([ports.setdefault(g[1], len(ports)) for g in edges], dtype=np.int64),
        np.asarray([g[2] for g in edges], dtype=np.int64),
    )
    edge_keys = (edge_names[:, 0] * n_names + edge_names[:, 1]) * max(1, len(ports)) + port_codes
    return OverlapMatrix(
        circuits=summaries,
        node_jaccard=jaccard_matrix(node_rows, node_names[:, 0]),
        edge_jaccard=jaccard_matrix(edge_rows, edge_keys),
    )


def circuit_detail(target: Engine | Session, circuit_id: int) -> dict[str, Any]:
    """One circuit: its summary, run parameters, evaluations, nodes in it and edges in it with scores."""
    writer, reader = aliased(Component), aliased(Component)
    with transaction(target) as session:
        rows = session.execute(_summary_query().where(Circuit.id == circuit_id)).all()
        if not rows:
            raise CatalogueError(f"no circuit with id {circuit_id}")
        summary = _summary(rows[0])
        run = rows[0][1]
        nodes = [
            {"node": name, "score": score}
            for name, score in session.execute(
                select(Component.name, CircuitNode.score)
                .join(Component, CircuitNode.component_id == Component.id)
                .where(CircuitNode.circuit_id == circuit_id, CircuitNode.in_circuit)
                .order_by(Component.id)
            )
        ]
        edges = [
            {"edge": f"{w}->{r}<{port}>" if port else f"{w}->{r}", "score": score}
            for w, r, port, score in session.execute(
                select(writer.name, reader.name, CircuitEdge.port, CircuitEdge.score)
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
        "run": {"id": run.id, **params},
        "evaluations": evaluations,
        "nodes": nodes,
        "edges": edges,
    }
