"""Heads and MLPs that recur across a model's relations, measured against the null
(atlas.spec.recurrence_stats).

Counted: the circuits of the model (optionally of one category and method) that met their faithfulness target
(`circuits.target_met` true) or were cut at a fixed size (NULL); `include_unmet` counts the others too. A
relation holds a component if any of its counted circuits does. Relations of the "control" category are not
counted with the others (unless `category="control"` asks for them): their circuits set the `generic` flag.

Reads one row per circuit: its heads and MLPs (`node_set`), their stability and roles (`member_stability`,
`member_roles`) and its null (`null_inclusion`), so the query sums stored vectors and computes nothing heavy.
SQLite reaches the columns after a circuit's score blob only by walking its overflow pages, so there (and for
circuits stored before migration 0008, or rows written by hand) the members come from `circuit_nodes` and
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

CONTROL = "control"  # the category of control relations (atlas.spec.corpus.CATEGORIES)
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
class _Circuits:
    """The selected circuits as flat arrays: per circuit (n) its relation, whether it is a control and whether
    it met its target (1, 0, -1 for NULL) and its null over the component names `[n, n_names]`; per member (m)
    its circuit (row), its name, its stability (NaN: none) and its role (index into ROLES, -1: none)."""

    relation_id: np.ndarray
    control: np.ndarray
    target_met: np.ndarray
    null: np.ndarray
    member_circuit: np.ndarray
    member_name: np.ndarray
    member_stability: np.ndarray
    member_role: np.ndarray


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
    stored (or it does not fit the graph) the one the store would have computed for `size`, its number of
    heads and MLPs."""
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
    n_unmet = int((circuits.target_met == 0).sum())
    counted = np.ones(len(circuits.relation_id), dtype=bool) if include_unmet else circuits.target_met != 0
    main = counted & (circuits.control if category == CONTROL else ~circuits.control)
    controls = counted & circuits.control
    report = RecurrenceReport(
        model=model,
        n_relations=len(set(circuits.relation_id[main].tolist())),
        n_circuits=int(main.sum()),
        n_unmet=0 if include_unmet else n_unmet,
        controls=sorted({relation_names[r] for r in circuits.relation_id[controls].tolist()}),
        components=[],
    )
    if not main.any():
        return report
    role_code = ROLES.index(role) if role is not None else None
    relations, held, null, memberships = _matrices(circuits, main, len(names), role_code)
    stats = recurrence_statistics(held, null)
    generic = None
    if controls.any():
        _, control_held, control_null, _ = _matrices(circuits, controls, len(names), role_code)
        generic, _ = generic_flags(control_held, control_null)
    stability_sum, stability_count, role_counts = memberships
    # The relations in name order, and per component (row) which of them hold it: each component's relations
    # are then read off in order (sorting them per component was a tenth of the report's time).
    relation_order = sorted(range(len(relations)), key=lambda r: relation_names[relations[r]])
    ordered_names = [relation_names[relations[r]] for r in relation_order]
    held_by_name = np.ascontiguousarray(held[relation_order].T)
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
                relations=[ordered_names[r] for r in np.flatnonzero(held_by_name[i]).tolist()],
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
    circuits: _Circuits, selected: np.ndarray, n_names: int, role_code: int | None
) -> tuple[list[int], np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Over the `selected` circuits: relation ids (rows), held and null `[n_relations, n_names]`, and over
    their memberships the sum and count of stabilities per name and `[n_names, len(ROLES)]` role counts."""
    rows = np.flatnonzero(selected)
    relations, relation_of = np.unique(circuits.relation_id[rows], return_inverse=True)
    position = np.full(len(selected), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    keep = selected[circuits.member_circuit]
    if role_code is not None:
        keep &= circuits.member_role == role_code
    circuit, name = position[circuits.member_circuit[keep]], circuits.member_name[keep]
    stability, role = circuits.member_stability[keep], circuits.member_role[keep]
    held = np.zeros((len(rows), n_names), dtype=bool)
    held[circuit, name] = True
    known = ~np.isnan(stability)
    stability_sum = np.bincount(name[known], weights=stability[known], minlength=n_names)
    stability_count = np.bincount(name[known], minlength=n_names)
    with_role = role >= 0
    role_counts = np.bincount(
        name[with_role] * len(ROLES) + role[with_role], minlength=n_names * len(ROLES)
    ).reshape(n_names, len(ROLES))
    return (
        relations.tolist(),
        relation_held(held, relation_of, len(relations)),
        relation_null(circuits.null[rows], relation_of, len(relations)),
        (stability_sum, stability_count, role_counts),
    )


def circuits_query(model: str, category: str | None, method: str | None, members: bool = True) -> Any:
    """The query's one read of the circuits: a row per circuit with its relation, category, model shape,
    size, target_met and null, and with `members` its node_set, member_stability and member_roles."""
    blobs = (Circuit.node_set, Circuit.member_stability, Circuit.member_roles) if members else ()
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
        .order_by(Circuit.id)
    )
    if category is not None:
        query = query.where(Relation.category.in_({category, CONTROL}))
    if method is not None:
        query = query.where(Run.method == method)
    return query


def _read_circuits(
    connection: Any,
    model: str,
    category: str | None,
    method: str | None,
    components: Sequence[Any],
    index_of: dict[str, int],
) -> _Circuits:
    """The model's circuits (of `category` and the controls, of `method`) with their members, member
    stability and roles, and null, in the name indices `index_of` (models of one name share them)."""
    fast = connection.dialect.name != "sqlite"
    query = circuits_query(model, category, method, members=fast)
    rows = _fetch(connection, query)
    n, n_names = len(rows), len(index_of)
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

    # Members: from the circuits' blobs (all three stored and consistent), else from their rows.
    def stored(row: Any) -> bool:
        return bool(
            fast
            and row[10] is not None
            and row[11] is not None
            and row[12] is not None
            and len(row[11]) == len(row[10])
            and len(row[12]) * 4 == len(row[10])
        )

    from_blobs = [k for k, row in enumerate(rows) if stored(row)]
    parts: list[tuple[np.ndarray, ...]] = []
    if from_blobs:
        lengths = np.asarray([len(rows[k][10]) // 4 for k in from_blobs], dtype=np.int64)
        joined = b"".join(rows[k][10] for k in from_blobs)
        writers = np.frombuffer(joined, dtype=MEMBER_DTYPE).astype(np.int64)
        circuit = np.repeat(np.asarray(from_blobs, dtype=np.int64), lengths)
        names = np.empty(len(writers), dtype=np.int64)
        for model_id, table in name_of_writer.items():
            at = np.repeat(np.asarray([rows[k][3] == model_id for k in from_blobs], dtype=bool), lengths)
            inside = (writers[at] >= 0) & (writers[at] < len(table))
            names[at] = np.where(inside, table[np.where(inside, writers[at], 0)], -1)
        stability = np.frombuffer(b"".join(rows[k][11] for k in from_blobs), dtype=MEMBER_STABILITY_DTYPE)
        roles = np.frombuffer(b"".join(rows[k][12] for k in from_blobs), dtype=MEMBER_ROLE_DTYPE)
        parts.append((circuit, names, stability.astype(np.float64), roles.astype(np.int64)))
    read = set(from_blobs)
    unread = [k for k in range(n) if k not in read]
    from_rows = _members_from_rows(connection, [rows[k][0] for k in unread], name_of_component)
    for k in unread:
        names, stability, roles = from_rows[rows[k][0]]
        parts.append((np.full(len(names), k, dtype=np.int64), names, stability, roles))
    member_circuit, member_name, member_stability, member_role = (
        np.concatenate([np.zeros(0, dtype=dtype), *(part[i] for part in parts)])
        for i, dtype in enumerate((np.int64, np.int64, np.float64, np.int64))
    )
    known = member_name >= 0
    member_circuit, member_name = member_circuit[known], member_name[known]
    member_stability, member_role = member_stability[known], member_role[known]

    # Nulls: the stored vectors, a model at a time; a circuit without one gets it computed from its size.
    null = np.zeros((n, n_names))
    sizes = np.bincount(member_circuit, minlength=n)
    for model_id, table in name_of_writer.items():
        graph, found = graphs[model_id], table >= 0
        mine = [k for k in range(n) if rows[k][3] == model_id]
        whole = [k for k in mine if rows[k][9] is not None and len(rows[k][9]) == 4 * graph.n_writers]
        if whole:
            vectors = np.frombuffer(b"".join(rows[k][9] for k in whole), dtype=NULL_DTYPE)
            at = np.asarray(whole, dtype=np.int64)
            null[np.ix_(at, table[found])] = vectors.reshape(len(whole), graph.n_writers)[:, found]
        for k in sorted(set(mine) - set(whole)):
            size = int(sizes[k])  # its heads and MLPs
            null[k, table[found]] = circuit_null(None, graph, rows[k][6], size)[found]
    return _Circuits(
        relation_id=np.asarray([row[1] for row in rows], dtype=np.int64),
        control=np.asarray([row[2] == CONTROL for row in rows], dtype=bool),
        target_met=np.asarray([-1 if row[8] is None else int(bool(row[8])) for row in rows], dtype=np.int8),
        null=null,
        member_circuit=member_circuit,
        member_name=member_name,
        member_stability=member_stability,
        member_role=member_role,
    )


def _fetch(connection: Any, query: Any) -> list[Any]:
    """The query's rows; on PostgreSQL through psycopg's binary protocol (the blobs come as bytes, not as
    hex text to decode, and no SQLAlchemy row objects are built: a third of the query's time at 2,000
    circuits)."""
    if connection.dialect.name != "postgresql":
        return list(connection.execute(query))
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    driver = connection.connection.driver_connection
    with driver.cursor(binary=True) as cursor:
        cursor.execute(str(compiled), compiled.params)
        return cursor.fetchall()


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
