"""Heads and MLPs that recur across a model's relations, measured against the null
(atlas.spec.recurrence_stats).

Counted: the circuits of the model (optionally of one category and method) that met their faithfulness target
(`circuits.target_met` true) or were cut at a fixed size (NULL); `include_unmet` counts the others too. A
relation holds a component if any of its counted circuits does. Relations of the "control" category are not
counted with the others (unless `category="control"` asks for them): their circuits set the `generic` flag.

Reads one row per circuit: its heads and MLPs (`node_set`), their stability and roles (`member_stability`,
`member_roles`) and its null (`null_inclusion`), so the query sums stored vectors and computes nothing heavy.
SQLite reaches the columns after a circuit's score blob only by walking its overflow pages, so there (and for
circuits stored before migration 0006, or rows written by hand) the members come from `circuit_nodes` and
`head_roles`; a circuit without a stored null gets it computed (and cached) from its size, as the store does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.db import CatalogueError
from atlas.db.models import ROLES, Circuit, CircuitNode, Component, HeadRole, Model, Relation, Run
from atlas.db.store import MEMBER_DTYPE, MEMBER_ROLE_DTYPE, MEMBER_STABILITY_DTYPE, transaction
from atlas.spec.graph import GraphIndex
from atlas.spec.recurrence import NULL_DTYPE, NULL_SAMPLES, inclusion_probabilities
from atlas.spec.recurrence_stats import generic_flags, recurrence_statistics, relation_held, relation_null

CONTROL = "control"  # the category of control relations (atlas.core.corpus.CATEGORIES)
CHUNK = 500  # circuit ids per IN list


@dataclass
class RecurringComponent:
    component: str
    kind: str
    layer: int | None
    head: int | None
    n_relations: int  # the count: relations whose counted circuits hold it
    relations: list[str]
    expected: float | None = None  # the count expected under the null
    enrichment: float | None = None  # n_relations / expected
    p_value: float | None = None  # one-sided, Poisson-binomial: P(count >= n_relations) under the null
    q_value: float | None = None  # Benjamini-Hochberg over every head and MLP of the model
    plumbing: bool = False  # random circuits of these sizes almost always hold it
    generic: bool | None = None  # recurs in control circuits too; None: no control circuit counted
    mean_stability: float | None = None  # over the counted circuits holding it (None: no bootstrap)
    roles: dict[str, int] = field(default_factory=dict)  # role -> counted circuits giving the head that role


@dataclass
class RecurrenceReport:
    model: str
    n_relations: int  # relations counted (the trials of each component's test)
    n_circuits: int  # circuits counted
    n_unmet: int  # circuits left out: their faithfulness target was not met (0 with include_unmet)
    controls: list[str]  # control relations whose circuits set the generic flag
    components: list[RecurringComponent]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Circuit:
    id: int
    relation_id: int
    category: str
    target_met: bool | None
    members: np.ndarray  # name indices of its heads and MLPs
    stability: np.ndarray  # float per member, NaN: none
    roles: np.ndarray  # int per member, index into ROLES, -1: none
    null: np.ndarray  # float [n_names]


def check_filters(min_stability: float | None, max_q: float | None, min_count: int = 1) -> None:
    """The query's numeric filters, or CatalogueError naming the bad one."""
    for name, value in (("min_stability", min_stability), ("max_q", max_q)):
        if value is not None and not 0.0 <= value <= 1.0:  # NaN fails too
            raise CatalogueError(f"{name} must be between 0 and 1, got {value}")
    if min_count < 1:
        raise CatalogueError(f"min_count must be at least 1, got {min_count}")


@lru_cache(maxsize=256)
def _computed_null(n_layers: int, n_heads: int, level: str, size: int) -> np.ndarray:
    """The null of a circuit stored without one, as atlas.db.store.null_columns computes it."""
    return inclusion_probabilities(GraphIndex(n_layers, n_heads), level, size, NULL_SAMPLES, seed=size)


def circuit_null(blob: bytes | None, graph: GraphIndex, level: str, size: int) -> np.ndarray:
    """A circuit's null inclusion vector `[n_writers]`: the stored `circuits.null_inclusion`, or where none is
    stored (or it does not fit the graph) the one the store would have computed for `size` (its edges, or
    at node level its heads and MLPs)."""
    vector = None if blob is None else np.frombuffer(blob, dtype=NULL_DTYPE)
    if vector is None or vector.shape != (graph.n_writers,):
        vector = _computed_null(graph.n_layers, graph.n_heads, level, int(size))
    return vector


def recurrence_report(
    target: Engine | Session,
    model: str,
    category: str | None = None,
    method: str | None = None,
    min_count: int = 2,
    role: str | None = None,
    *,
    min_stability: float | None = None,
    max_q: float | None = None,
    exclude_generic: bool = False,
    include_unmet: bool = False,
) -> RecurrenceReport:
    """Heads and MLPs of `model` (by name) in the circuits of at least `min_count` relations, with the count
    expected under the null, enrichment, p- and q-value, plumbing and generic flags, mean stability and roles;
    most significant first (then most relations, then graph order). Filters on what is counted: category,
    method, `role` (a head counts only where it has that role: "mover heads that recur"), `include_unmet`.
    Filters on what is shown (the statistics are computed over every component first): `min_count`,
    `max_q`, `min_stability` (mean stability at least this; components without any drop out) and
    `exclude_generic`."""
    check_filters(min_stability, max_q, min_count)
    if role is not None and role not in ROLES:
        raise CatalogueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    with transaction(target) as session:
        connection = session.connection()
        components = connection.execute(
            select(
                Component.id,
                Component.model_id,
                Component.name,
                Component.kind,
                Component.layer,
                Component.head,
            )
            .join(Model, Component.model_id == Model.id)
            .where(Model.name == model, Component.kind.in_(("head", "mlp")))
        ).all()
        names: dict[str, tuple[str, int | None, int | None]] = {}  # name -> kind, layer, head
        for _, _, name, kind, layer, head in components:
            names.setdefault(name, (kind, layer, head))
        index_of = {name: i for i, name in enumerate(names)}
        circuits = _read_circuits(connection, model, category, method, components, index_of)
        relation_names = dict(connection.execute(select(Relation.id, Relation.name)).all())
    unmet = [c for c in circuits if c.target_met is False]
    if not include_unmet:
        circuits = [c for c in circuits if c.target_met is not False]
    counted_category = (lambda c: c == CONTROL) if category == CONTROL else (lambda c: c != CONTROL)
    main = [c for c in circuits if counted_category(c.category)]
    controls = [c for c in circuits if c.category == CONTROL]
    report = RecurrenceReport(
        model=model,
        n_relations=len({c.relation_id for c in main}),
        n_circuits=len(main),
        n_unmet=0 if include_unmet else len(unmet),
        controls=sorted({relation_names[c.relation_id] for c in controls}),
        components=[],
    )
    if not main:
        return report
    role_code = ROLES.index(role) if role is not None else None
    relations, held, null, memberships = _matrices(main, len(names), role_code)
    stats = recurrence_statistics(held, null)
    generic = None
    if controls:
        _, control_held, control_null, _ = _matrices(controls, len(names), role_code)
        generic, _ = generic_flags(control_held, control_null)
    stability_sum, stability_count, role_counts = memberships
    found = []
    for i, (name, (kind, layer, head)) in enumerate(names.items()):
        count = int(stats.observed[i])
        if count < min_count or (max_q is not None and not stats.q_value[i] <= max_q):
            continue
        is_generic = None if generic is None else bool(generic[i])
        if exclude_generic and is_generic:
            continue
        mean = float(stability_sum[i] / stability_count[i]) if stability_count[i] else None
        if min_stability is not None and (mean is None or mean < min_stability):
            continue
        found.append(
            RecurringComponent(
                component=name,
                kind=kind,
                layer=layer,
                head=head,
                n_relations=count,
                relations=sorted(relation_names[relations[r]] for r in np.flatnonzero(held[:, i]).tolist()),
                expected=float(stats.expected[i]),
                enrichment=None if np.isnan(stats.enrichment[i]) else float(stats.enrichment[i]),
                p_value=float(stats.p_value[i]),
                q_value=float(stats.q_value[i]),
                plumbing=bool(stats.plumbing[i]),
                generic=is_generic,
                mean_stability=mean,
                roles={ROLES[k]: int(n) for k, n in enumerate(role_counts[i].tolist()) if n},
            )
        )

    def graph_order(c: RecurringComponent) -> tuple[int, int]:
        return (c.layer or 0, c.head if c.head is not None else 1 << 30)

    report.components = sorted(found, key=lambda c: (c.q_value, -c.n_relations, *graph_order(c)))
    return report


def recurring_components(
    target: Engine | Session,
    model: str,
    category: str | None = None,
    method: str | None = None,
    min_count: int = 2,
    role: str | None = None,
    **filters: Any,
) -> list[RecurringComponent]:
    """`recurrence_report(...).components`."""
    return recurrence_report(target, model, category, method, min_count, role, **filters).components


def _matrices(
    circuits: Sequence[_Circuit], n_names: int, role_code: int | None
) -> tuple[list[int], np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Relation ids (rows), held and null `[n_relations, n_names]`, and over the circuits' memberships: the
    sum and count of stabilities per name, and `[n_names, len(ROLES)]` role counts."""
    relations = sorted({c.relation_id for c in circuits})
    row = {r: i for i, r in enumerate(relations)}
    held = np.zeros((len(circuits), n_names), dtype=bool)
    null = np.zeros((len(circuits), n_names))
    stability_sum, stability_count = np.zeros(n_names), np.zeros(n_names, dtype=np.int64)
    role_counts = np.zeros((n_names, len(ROLES)), dtype=np.int64)
    for k, c in enumerate(circuits):
        keep = np.ones(len(c.members), dtype=bool) if role_code is None else c.roles == role_code
        members, stability, roles = c.members[keep], c.stability[keep], c.roles[keep]
        held[k, members] = True
        null[k] = c.null
        known = ~np.isnan(stability)
        np.add.at(stability_sum, members[known], stability[known])
        np.add.at(stability_count, members[known], 1)
        with_role = roles >= 0
        np.add.at(role_counts, (members[with_role], roles[with_role]), 1)
    of = np.asarray([row[c.relation_id] for c in circuits], dtype=np.int64)
    return (
        relations,
        relation_held(held, of, len(relations)),
        relation_null(null, of, len(relations)),
        (stability_sum, stability_count, role_counts),
    )


def _read_circuits(
    connection: Any,
    model: str,
    category: str | None,
    method: str | None,
    components: Sequence[Any],
    index_of: dict[str, int],
) -> list[_Circuit]:
    """The model's circuits (of `category` and the controls, of `method`) with their members, member
    stability and roles, and null, in the name indices `index_of` (models of one name share them)."""
    fast = connection.dialect.name != "sqlite"
    blobs = (Circuit.node_set, Circuit.member_stability, Circuit.member_roles) if fast else ()
    query = (
        select(
            Circuit.id,
            Run.relation_id,
            Relation.category,
            Run.model_id,
            Model.n_layers,
            Model.n_heads,
            Circuit.level,
            Circuit.n_edges,
            Circuit.target_met,
            Circuit.null_inclusion,
            *blobs,
        )
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .join(Relation, Run.relation_id == Relation.id)
        .where(Model.name == model)
    )
    if category is not None:
        query = query.where(Relation.category.in_({category, CONTROL}))
    if method is not None:
        query = query.where(Run.method == method)
    rows = list(connection.execute(query))
    if not rows:
        return []
    name_of_component = {c[0]: index_of[c[2]] for c in components}
    graphs = {row[3]: GraphIndex(row[4], row[5]) for row in rows}
    name_of_writer: dict[int, np.ndarray] = {}  # per model id: writer index -> name index (-1: none)
    for model_id, graph in graphs.items():
        name_of_writer[model_id] = np.full(graph.n_writers, -1, dtype=np.int64)
    for component_id, model_id, _, kind, layer, head in components:
        if model_id in graphs:
            graph = graphs[model_id]
            writer = graph.head_writer(layer, head) if kind == "head" else graph.mlp_writer(layer)
            name_of_writer[model_id][writer] = name_of_component[component_id]
    from_blobs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if fast:
        for row in rows:
            if row[10] is not None and row[11] is not None and row[12] is not None:
                writers = np.frombuffer(row[10], dtype=MEMBER_DTYPE).astype(np.int64)
                from_blobs[row[0]] = (
                    name_of_writer[row[3]][writers],
                    np.frombuffer(row[11], dtype=MEMBER_STABILITY_DTYPE).astype(np.float64),
                    np.frombuffer(row[12], dtype=MEMBER_ROLE_DTYPE).astype(np.int64),
                )
    from_rows = _members_from_rows(
        connection, [row[0] for row in rows if row[0] not in from_blobs], name_of_component
    )
    n_names = len(index_of)
    circuits = []
    for row in rows:
        circuit_id, model_id, graph = row[0], row[3], graphs[row[3]]
        members, stability, roles = from_blobs.get(circuit_id) or from_rows[circuit_id]
        writers = name_of_writer[model_id]
        size = row[7] if row[6] == "edge" else int((members >= 0).sum())
        vector = circuit_null(row[9], graph, row[6], size)
        null = np.zeros(n_names)
        known = writers >= 0
        null[writers[known]] = vector[known]
        keep = members >= 0
        circuits.append(
            _Circuit(
                id=circuit_id,
                relation_id=row[1],
                category=row[2],
                target_met=row[8],
                members=members[keep],
                stability=stability[keep],
                roles=roles[keep],
                null=null,
            )
        )
    return circuits


def _members_from_rows(
    connection: Any, ids: Iterable[int], name_of_component: dict[int, int]
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Members (name indices), their stability and role codes from `circuit_nodes` and `head_roles`."""
    ids = list(ids)
    members: dict[int, dict[int, tuple[float, int]]] = {i: {} for i in ids}
    code = {role: k for k, role in enumerate(ROLES)}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for circuit_id, component_id, stability in connection.execute(
            select(CircuitNode.circuit_id, CircuitNode.component_id, CircuitNode.stability).where(
                CircuitNode.circuit_id.in_(chunk), CircuitNode.in_circuit
            )
        ):
            name = name_of_component.get(component_id)
            if name is not None:
                members[circuit_id][name] = (np.nan if stability is None else float(stability), -1)
        for circuit_id, component_id, role in connection.execute(
            select(HeadRole.circuit_id, HeadRole.component_id, HeadRole.role).where(
                HeadRole.circuit_id.in_(chunk)
            )
        ):
            name = name_of_component.get(component_id)
            if name is not None and name in members[circuit_id]:
                members[circuit_id][name] = (members[circuit_id][name][0], code.get(role, -1))
    out = {}
    for circuit_id, found in members.items():
        names = np.fromiter(found, dtype=np.int64, count=len(found))
        values = list(found.values())
        out[circuit_id] = (
            names,
            np.asarray([v[0] for v in values], dtype=np.float64).reshape(-1),
            np.asarray([v[1] for v in values], dtype=np.int64).reshape(-1),
        )
    return out
