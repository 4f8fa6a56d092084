"""Components that recur across models, matched by kind and relative depth.

Models differ in depth and width, so a head of one model is matched to heads of another by where it sits:
its relative depth `(layer + 0.5) / n_layers`, binned into `bins` equal ranges, and optionally by role: only
heads catalogued with that role in a circuit (`mover`, `relation`, `mix`) count.

Counted, as in the recurring-components query (atlas.db.recurrence): circuits that met their faithfulness
target or were cut at a fixed size (`include_unmet` for all), not those of control relations (unless
`category="control"`). Against the null: a group's memberships (circuit, component pairs) are compared with
the number expected if each counted circuit were a random connected circuit of its size, the sum of its
components' stored inclusion probabilities over the group's kind and depth range (exact by linearity). There
is no p-value here: the memberships of one circuit in one group are not independent, and only the
probabilities of single components are stored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.db import CatalogueError
from atlas.db.models import ROLES, Circuit, CircuitNode, Component, HeadRole, Model, Relation, Run
from atlas.db.recurrence import CONTROL, circuit_null
from atlas.db.store import transaction
from atlas.spec.graph import GraphIndex


@dataclass
class DepthGroup:
    kind: str  # "head" or "mlp"
    depth_from: float  # relative depth range [depth_from, depth_to)
    depth_to: float
    models: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    n_circuits: int = 0
    n_members: int = 0  # (circuit, component) memberships in the group
    expected_members: float | None = None  # under the null, over every counted circuit
    enrichment: float | None = None  # n_members / expected_members

    @property
    def n_models(self) -> int:
        return len(self.models)


def components_across_models(
    target: Engine | Session,
    *,
    bins: int = 10,
    min_models: int = 2,
    category: str | None = None,
    method: str | None = None,
    role: str | None = None,
    include_unmet: bool = False,
) -> list[DepthGroup]:
    """Heads and MLPs in circuits of at least `min_models` models, grouped by kind and relative depth,
    with the models, the relations and the number of circuits in each group, and the group's memberships
    against the null (expected, enrichment); most models first. With `role`, only heads with that role in the
    circuit (the null does not know roles: the enrichment of a role is a lower bound)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if role is not None and role not in ROLES:
        raise CatalogueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    # Integer arithmetic, the same on every backend: floor((layer + 0.5) / n_layers * bins).
    depth_bin = ((2 * Component.layer + 1) * bins) // (2 * Model.n_layers)
    query = (
        select(Component.kind, depth_bin, Model.name, Relation.name, CircuitNode.circuit_id, Component.id)
        .join(CircuitNode, CircuitNode.component_id == Component.id)
        .join(Circuit, Circuit.id == CircuitNode.circuit_id)
        .join(Run, Run.id == Circuit.run_id)
        .join(Model, Model.id == Run.model_id)
        .join(Relation, Relation.id == Run.relation_id)
        .where(CircuitNode.in_circuit, Component.kind.in_(("head", "mlp")))
        .distinct()
    )
    counted = (
        select(Model.n_layers, Model.n_heads, Circuit.level, Circuit.n_nodes, Circuit.n_edges)
        .add_columns(Circuit.null_inclusion)
        .join(Run, Run.id == Circuit.run_id)
        .join(Model, Model.id == Run.model_id)
        .join(Relation, Relation.id == Run.relation_id)
    )
    filters: list[Any] = [
        Relation.category == category if category is not None else Relation.category != CONTROL
    ]
    if method is not None:
        filters.append(Run.method == method)
    if not include_unmet:
        filters.append(Circuit.target_met.is_not(False))
    query, counted = query.where(*filters), counted.where(*filters)
    if role is not None:
        query = query.join(
            HeadRole,
            (HeadRole.circuit_id == CircuitNode.circuit_id) & (HeadRole.component_id == Component.id),
        ).where(HeadRole.role == role)
    models: dict[tuple[str, int], set[str]] = defaultdict(set)
    relations: dict[tuple[str, int], set[str]] = defaultdict(set)
    circuits: dict[tuple[str, int], set[int]] = defaultdict(set)
    members: dict[tuple[str, int], int] = defaultdict(int)
    with transaction(target) as session:
        for kind, bin_, model, relation, circuit_id, _ in session.execute(query):
            key = (kind, int(bin_ or 0))  # heads and MLPs always have a layer
            models[key].add(model)
            relations[key].add(relation)
            circuits[key].add(circuit_id)
            members[key] += 1
        expected = _expected_members(session.execute(counted).all(), bins)
    groups = [
        DepthGroup(
            kind,
            b / bins,
            (b + 1) / bins,
            sorted(models[key]),
            sorted(relations[key]),
            len(circuits[key]),
            members[key],
            expected.get(key),
            members[key] / expected[key] if expected.get(key) else None,
        )
        for key in models
        for kind, b in [key]
        if len(models[key]) >= min_models
    ]
    return sorted(groups, key=lambda g: (-g.n_models, -g.n_circuits, g.kind, g.depth_from))


def _expected_members(rows: Sequence[Any], bins: int) -> dict[tuple[str, int], float]:
    """Per (kind, depth bin): the memberships expected under the null, summed over the counted circuits
    (rows of n_layers, n_heads, level, n_nodes, n_edges, null_inclusion)."""
    expected: dict[tuple[str, int], float] = defaultdict(float)
    for n_layers, n_heads, level, n_nodes, n_edges, blob in rows:
        graph = GraphIndex(n_layers, n_heads)
        # A node circuit's size is its heads and MLPs: its nodes but input and logits.
        null = circuit_null(blob, graph, level, n_edges if level == "edge" else max(n_nodes - 2, 0))
        per_layer = null[1:].reshape(n_layers, n_heads + 1).astype(np.float64)
        for layer in range(n_layers):
            b = ((2 * layer + 1) * bins) // (2 * n_layers)
            expected[("head", b)] += float(per_layer[layer, :n_heads].sum())
            expected[("mlp", b)] += float(per_layer[layer, n_heads])
    return expected
