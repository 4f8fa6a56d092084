"""Components that recur across models, matched by kind and relative depth.

Models differ in depth and width, so a head of one model is matched to heads of another by where it sits:
its relative depth `(layer + 0.5) / n_layers`, binned into `bins` equal ranges, and optionally by role: only
heads catalogued with that role in a circuit (`mover`, `relation`, `mix`) count.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.db import CatalogueError
from atlas.db.models import ROLES, Circuit, CircuitNode, Component, HeadRole, Model, Relation, Run
from atlas.db.store import transaction


@dataclass
class DepthGroup:
    kind: str  # "head" or "mlp"
    depth_from: float  # relative depth range [depth_from, depth_to)
    depth_to: float
    models: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    n_circuits: int = 0

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
) -> list[DepthGroup]:
    """Heads and MLPs in circuits of at least `min_models` models, grouped by kind and relative depth,
    with the models, the relations and the number of circuits in each group; most models first. With `role`,
    only heads with that role in the circuit."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if role is not None and role not in ROLES:
        raise CatalogueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    # Integer arithmetic, the same on every backend: floor((layer + 0.5) / n_layers * bins).
    depth_bin = ((2 * Component.layer + 1) * bins) // (2 * Model.n_layers)
    query = (
        select(Component.kind, depth_bin, Model.name, Relation.name, CircuitNode.circuit_id)
        .join(CircuitNode, CircuitNode.component_id == Component.id)
        .join(Circuit, Circuit.id == CircuitNode.circuit_id)
        .join(Run, Run.id == Circuit.run_id)
        .join(Model, Model.id == Run.model_id)
        .join(Relation, Relation.id == Run.relation_id)
        .where(CircuitNode.in_circuit, Component.kind.in_(("head", "mlp")))
        .distinct()
    )
    if category is not None:
        query = query.where(Relation.category == category)
    if method is not None:
        query = query.where(Run.method == method)
    if role is not None:
        query = query.join(
            HeadRole,
            (HeadRole.circuit_id == CircuitNode.circuit_id) & (HeadRole.component_id == Component.id),
        ).where(HeadRole.role == role)
    models: dict[tuple[str, int], set[str]] = defaultdict(set)
    relations: dict[tuple[str, int], set[str]] = defaultdict(set)
    circuits: dict[tuple[str, int], set[int]] = defaultdict(set)
    with transaction(target) as session:
        for kind, bin_, model, relation, circuit_id in session.execute(query):
            key = (kind, int(bin_ or 0))  # heads and MLPs always have a layer
            models[key].add(model)
            relations[key].add(relation)
            circuits[key].add(circuit_id)
    groups = [
        DepthGroup(
            kind, b / bins, (b + 1) / bins, sorted(models[key]), sorted(relations[key]), len(circuits[key])
        )
        for key in models
        for kind, b in [key]
        if len(models[key]) >= min_models
    ]
    return sorted(groups, key=lambda g: (-g.n_models, -g.n_circuits, g.kind, g.depth_from))
