"""Recurrence measured against the null (atlas.spec.recurrence): per component (head or MLP), how many
relations' circuits hold it, how many would by chance, and how surprising the difference is.

For one component and relation r the null probability that the relation's circuits hold it is
`q_r = 1 - prod_c (1 - p_c)` over the relation's circuits c (a relation holds a component if any of its
circuits does; `p_c` is the circuit's stored inclusion probability). The observed count X is a sum of
independent Bernoulli(q_r) under the null, a Poisson-binomial: `expected = sum_r q_r`, `enrichment =
observed / expected`, and the one-sided p-value `P(X >= observed)` is computed exactly by dynamic
programming over the relations (vectorized across components). Benjamini-Hochberg q-values are taken across
every component of the model (each is one test). A component whose null probability averages at least
`PLUMBING` is *plumbing*: random circuits of those sizes almost always hold it, so its count says little and
its enrichment is near 1 by construction.

Controls (relations of the "control" category, tasks that need no stored knowledge) are tested the same way
on their own; a component whose control p-value is under `GENERIC_ALPHA` (uncorrected: the flag only takes
components out of the knowledge-specific list, so erring towards flagging is the safe side) is *generic*.

Torch-free: the catalogue's query and the demo's in-memory table share it. For the demo::

    circuits = [circuit_components(graph, r.relation, r.circuit.nodes, r.circuit.level) ...]
    print("\n".join(format_recurrence(recurrence_table(graph, knowledge, controls), n_relations)))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from atlas.spec.graph import GraphIndex
from atlas.spec.recurrence import NULL_SAMPLES, inclusion_probabilities

# Mean null inclusion from which a component is plumbing (random circuits of these sizes almost always
# hold it).
PLUMBING = 0.9
# A control p-value under this flags a component as generic (uncorrected; see the module's docstring).
GENERIC_ALPHA = 0.05
# The q-value under which a component recurs significantly (the demo's table, the docs' examples).
SIGNIFICANT_Q = 0.05


def _membership(relation_of: np.ndarray, n_relations: int) -> np.ndarray:
    """`[n_relations, n_circuits]` 0/1: which relation each circuit (column) belongs to."""
    relation_of = np.asarray(relation_of, dtype=np.int64)
    member = np.zeros((n_relations, len(relation_of)))
    member[relation_of, np.arange(len(relation_of))] = 1.0
    return member


def relation_null(null: np.ndarray, relation_of: np.ndarray, n_relations: int) -> np.ndarray:
    """`[n_relations, n_components]`: the probability that a relation's circuits hold each component under
    the null, `1 - prod (1 - p_c)` over its circuits (rows of `null`, `[n_circuits, n_components]`;
    `relation_of[c]` the row's relation). Summed in log space (one matrix product); a certain member (p = 1)
    makes it 1."""
    null = np.clip(np.asarray(null, dtype=np.float64), 0.0, 1.0)
    member = _membership(relation_of, n_relations)
    certain = null >= 1.0
    log_miss = member @ np.log1p(-np.where(certain, 0.0, null))
    return np.where(member @ certain > 0, 1.0, -np.expm1(log_miss))


def relation_held(held: np.ndarray, relation_of: np.ndarray, n_relations: int) -> np.ndarray:
    """Bool `[n_relations, n_components]`: whether any of a relation's circuits (rows of `held`) holds it."""
    return (_membership(relation_of, n_relations) @ np.asarray(held, dtype=np.float64)) > 0


def poisson_binomial_sf(probabilities: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """`P(X_i >= observed[i])` where X_i is the number of successes of independent trials with success
    probabilities `probabilities[i, :]` (`[n_components, n_trials]`): exact, one pass over the trials for all
    components at once. The tail is summed from the top, so small p-values keep their precision."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be [n_components, n_trials], got shape {list(p.shape)}")
    k = np.asarray(observed, dtype=np.int64)
    n_components, n_trials = p.shape
    if k.shape != (n_components,):
        raise ValueError(f"observed must have shape [{n_components}], got {list(k.shape)}")
    dist = np.zeros((n_components, n_trials + 1))
    dist[:, 0] = 1.0
    for j in range(n_trials):
        success = p[:, j : j + 1]
        moved = dist[:, :-1] * success
        dist *= 1.0 - success
        dist[:, 1:] += moved
    tail = np.cumsum(dist[:, ::-1], axis=1)[:, ::-1]  # tail[i, m] = P(X_i >= m)
    out = np.ones(n_components)
    inside = (k >= 0) & (k <= n_trials)
    out[inside] = tail[np.flatnonzero(inside), k[inside]]
    out[k > n_trials] = 0.0
    return np.minimum(out, 1.0)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): `min_{j >= i} p_(j) * m / j` over the p-values in
    ascending order, capped at 1, returned in the input's order. NaN p-values are not tests: NaN q."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if not m:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


@dataclass
class RecurrenceStats:
    """Per component (arrays of `n_components`): relations holding it, the count expected under the null,
    enrichment (NaN where nothing is expected), the one-sided p-value, the BH q-value, the mean null
    probability over the relations and the plumbing flag."""

    observed: np.ndarray
    expected: np.ndarray
    enrichment: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    null_mean: np.ndarray
    plumbing: np.ndarray
    n_relations: int = 0


def recurrence_statistics(held: np.ndarray, null: np.ndarray) -> RecurrenceStats:
    """`held` (bool) and `null` (probabilities) are `[n_relations, n_components]`, one row per relation (see
    `relation_held`, `relation_null`)."""
    held = np.asarray(held, dtype=bool)
    null = np.clip(np.asarray(null, dtype=np.float64), 0.0, 1.0)
    if held.shape != null.shape:
        raise ValueError(f"held {list(held.shape)} and null {list(null.shape)} differ in shape")
    n_relations = held.shape[0]
    observed = held.sum(0)
    expected = null.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        enrichment = np.where(expected > 0, observed / np.where(expected > 0, expected, 1.0), np.nan)
        null_mean = expected / n_relations if n_relations else np.full(expected.shape, np.nan)
    p_value = poisson_binomial_sf(null.T, observed)
    return RecurrenceStats(
        observed=observed,
        expected=expected,
        enrichment=enrichment,
        p_value=p_value,
        q_value=benjamini_hochberg(p_value),
        null_mean=null_mean,
        plumbing=np.nan_to_num(null_mean, nan=0.0) >= PLUMBING,
        n_relations=n_relations,
    )


def generic_flags(held: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, RecurrenceStats]:
    """Components that recur in the control relations' circuits more than chance (control p-value under
    `GENERIC_ALPHA`), and the controls' statistics. Arguments as `recurrence_statistics`'s."""
    stats = recurrence_statistics(held, null)
    return (stats.observed > 0) & (stats.p_value < GENERIC_ALPHA), stats


# ------------------------------------------------------------------------------------ in-memory circuits


@dataclass(frozen=True)
class CircuitComponents:
    """One circuit as the recurrence table needs it: its relation, its heads and MLPs (names), and its null
    inclusion vector (float `[n_writers]`, as `atlas.spec.recurrence.inclusion_probabilities` gives it for
    the circuit's level and size; the catalogue stores it as `circuits.null_inclusion`)."""

    relation: str
    components: frozenset[str]
    null: np.ndarray = field(compare=False)


def circuit_components(
    graph: GraphIndex, relation: str, components: Iterable[str], level: str
) -> CircuitComponents:
    """A circuit for `recurrence_table`, with the null the catalogue stores for it (atlas.db.store's
    `null_columns`: as many heads and MLPs as it holds, seeded by that number)."""
    names = frozenset(name for name in components if name not in ("input", "logits"))
    null = inclusion_probabilities(graph, level, len(names), NULL_SAMPLES, seed=len(names))
    return CircuitComponents(relation, names, null)


@dataclass(frozen=True)
class RecurringRow:
    component: str
    relations: tuple[str, ...]
    count: int
    expected: float
    enrichment: float | None
    p_value: float
    q_value: float
    plumbing: bool
    generic: bool | None  # None: no control circuits were given


def recurrence_table(
    graph: GraphIndex,
    circuits: Sequence[CircuitComponents],
    controls: Sequence[CircuitComponents] = (),
    max_q: float | None = SIGNIFICANT_Q,
) -> list[RecurringRow]:
    """The heads and MLPs that recur across the circuits' relations, measured against the null: those with
    q-value at most `max_q` (None: every component some circuit holds), most significant first. Controls (if
    any) set the generic flag."""
    names = graph.writer_names[1:]  # heads and MLPs; input is never a component
    index = {name: i for i, name in enumerate(names)}

    def matrices(group: Sequence[CircuitComponents]) -> tuple[list[str], np.ndarray, np.ndarray]:
        relations = list(dict.fromkeys(c.relation for c in group))
        row = {r: i for i, r in enumerate(relations)}
        held = np.zeros((len(group), len(names)), dtype=bool)
        null = np.zeros((len(group), len(names)))
        for k, circuit in enumerate(group):
            vector = np.asarray(circuit.null, dtype=np.float64)
            if vector.shape != (graph.n_writers,):
                raise ValueError(
                    f"circuit of {circuit.relation!r}: null has shape {list(vector.shape)}, not "
                    f"[{graph.n_writers}]"
                )
            null[k] = vector[1:]
            unknown = sorted(set(circuit.components) - set(index))
            if unknown:
                raise ValueError(f"circuit of {circuit.relation!r}: no component named {', '.join(unknown)}")
            held[k, [index[n] for n in circuit.components]] = True
        of = np.asarray([row[c.relation] for c in group], dtype=np.int64)
        return (
            relations,
            relation_held(held, of, len(relations)),
            relation_null(null, of, len(relations)),
        )

    relations, held, null = matrices(circuits)
    stats = recurrence_statistics(held, null)
    generic: np.ndarray | None = None
    if controls:
        _, control_held, control_null = matrices(controls)
        generic, _ = generic_flags(control_held, control_null)
    rows = []
    for i, name in enumerate(names):
        if not stats.observed[i] or (max_q is not None and not stats.q_value[i] <= max_q):
            continue
        rows.append(
            RecurringRow(
                component=name,
                relations=tuple(r for r, h in zip(relations, held[:, i].tolist(), strict=True) if h),
                count=int(stats.observed[i]),
                expected=float(stats.expected[i]),
                enrichment=None if np.isnan(stats.enrichment[i]) else float(stats.enrichment[i]),
                p_value=float(stats.p_value[i]),
                q_value=float(stats.q_value[i]),
                plumbing=bool(stats.plumbing[i]),
                generic=None if generic is None else bool(generic[i]),
            )
        )
    # The catalogue's query orders the same way (q, then count, then graph order).
    return sorted(rows, key=lambda r: (r.q_value, -r.count, index[r.component]))


def format_recurrence(rows: Sequence[RecurringRow], n_relations: int) -> list[str]:
    """The table as lines: component, count of `n_relations`, expected, enrichment, q, flags, relations."""
    lines = [f"  {'component':<9} {'count':>5} {'expected':>8} {'enrich':>6} {'q':>9}  flags"]
    for r in rows:
        enrichment = "-" if r.enrichment is None else f"{r.enrichment:.2f}"
        flags = ",".join(flag for flag, on in (("plumbing", r.plumbing), ("generic", bool(r.generic))) if on)
        relations = "all" if r.count == n_relations else ", ".join(r.relations)
        lines.append(
            f"  {r.component:<9} {r.count:>5} {r.expected:>8.2f} {enrichment:>6} {r.q_value:>9.2g}  "
            f"{flags or '-':<16} {relations}"
        )
    return lines
