"""Recurrence statistics computed the slow, plain way, to check the catalogue's answers against (CLI, API,
queries): each relation's null from its circuits' stored vectors, the Poisson-binomial tail by enumerating
every outcome of the relations, Benjamini-Hochberg by its definition. Importable from any test (pytest puts
tests/ on sys.path for tests/conftest.py)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, select

from atlas.db.models import Circuit, Model, Relation, Run
from atlas.spec.graph import GraphIndex


@dataclass
class Expected:
    count: int
    relations: list[str]
    expected: float
    p_value: float
    q_value: float = math.nan

    @property
    def enrichment(self) -> float:
        return self.count / self.expected


def tail(probabilities: list[float], k: int) -> float:
    """P(at least k successes), summed over all 2^n outcomes."""
    total = 0.0
    for outcome in itertools.product((False, True), repeat=len(probabilities)):
        if sum(outcome) >= k:
            total += math.prod(p if o else 1 - p for p, o in zip(probabilities, outcome, strict=True))
    return total


def bh(p_values: dict[str, float]) -> dict[str, float]:
    """q_i = min over the tests j at least as large as i (in rank order) of p_j * m / rank_j, capped at 1."""
    ranked = sorted(p_values, key=lambda name: p_values[name])
    m = len(ranked)
    return {
        name: min(1.0, min(p_values[other] * m / (j + 1) for j, other in enumerate(ranked) if j >= i))
        for i, name in enumerate(ranked)
    }


def stored_circuits(
    engine: Engine, model: str, ids: Iterable[int] | None = None
) -> list[tuple[str, set[str], dict[str, float]]]:
    """The model's circuits as (relation, heads and MLPs, {component: stored null probability}), read
    straight from the circuits' rows (decoded here with numpy, not with the query's code)."""
    query = (
        select(
            Circuit.id, Relation.name, Model.n_layers, Model.n_heads, Circuit.node_set, Circuit.null_inclusion
        )
        .join(Run, Circuit.run_id == Run.id)
        .join(Model, Run.model_id == Model.id)
        .join(Relation, Run.relation_id == Relation.id)
        .where(Model.name == model)
    )
    wanted = None if ids is None else set(ids)
    out = []
    with engine.connect() as connection:
        for circuit_id, relation, n_layers, n_heads, node_set, null in connection.execute(query):
            if wanted is not None and circuit_id not in wanted:
                continue
            names = GraphIndex(n_layers, n_heads).writer_names
            members = {names[w] for w in np.frombuffer(node_set, dtype="<i4").tolist()}
            vector = np.frombuffer(null, dtype="<f4").astype(float).tolist()
            out.append((relation, members, {names[w]: vector[w] for w in range(1, len(names))}))
    return out


def expected_recurrence(circuits: list[tuple[str, set[str], dict[str, float]]]) -> dict[str, Expected]:
    """Per component (every one some null covers): relations holding it, the expected count, the p-value
    and q-value, over the circuits given (a relation holds a component if any of its circuits does)."""
    relations = sorted({relation for relation, _, _ in circuits})
    components = sorted({name for _, _, null in circuits for name in null})
    found: dict[str, Expected] = {}
    for name in components:
        held, probabilities = [], []
        for relation in relations:
            mine = [(members, null) for r, members, null in circuits if r == relation]
            if any(name in members for members, _ in mine):
                held.append(relation)
            probabilities.append(1 - math.prod(1 - null[name] for _, null in mine))
        found[name] = Expected(len(held), held, sum(probabilities), tail(probabilities, len(held)))
    for name, q in bh({name: e.p_value for name, e in found.items()}).items():
        found[name].q_value = q
    return found
