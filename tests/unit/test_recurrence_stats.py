"""The statistics of recurrence against the null (atlas.spec.recurrence_stats): the Poisson-binomial tail
against brute-force enumeration, Benjamini-Hochberg against a hand computation, and the issue's test of a
synthetic catalogue: one planted head in every relation's circuit, everything else random connected circuits
drawn by the null's own sampler, with the nulls those circuits' sizes get in the catalogue."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest

from atlas.spec.graph import GraphIndex, random_components
from atlas.spec.recurrence import inclusion_probabilities
from atlas.spec.recurrence_stats import (
    GENERIC_ALPHA,
    PLUMBING,
    CircuitComponents,
    benjamini_hochberg,
    circuit_components,
    format_recurrence,
    generic_flags,
    poisson_binomial_sf,
    recurrence_statistics,
    recurrence_table,
    relation_held,
    relation_null,
)


def brute_force_sf(p: np.ndarray, k: int) -> float:
    """P(X >= k) by summing the probability of every one of the 2^n outcomes with at least k successes."""
    total = 0.0
    for outcome in itertools.product((0, 1), repeat=len(p)):
        if sum(outcome) >= k:
            total += float(np.prod([pi if o else 1 - pi for pi, o in zip(p, outcome, strict=True)]))
    return total


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_poisson_binomial_tail_equals_enumeration(n: int) -> None:
    rng = np.random.default_rng(n)
    p = rng.uniform(0, 1, size=(4, n))
    p[1, 0] = 0.0  # certain failures and successes are allowed
    p[2, -1] = 1.0
    for k in range(n + 2):
        got = poisson_binomial_sf(p, np.full(4, k))
        want = [brute_force_sf(row, k) for row in p]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_poisson_binomial_small_tails_keep_precision() -> None:
    """Ten trials of probability 1e-3, all successes: 1e-30 (a subtraction from 1 would give 0)."""
    p = np.full((1, 10), 1e-3)
    assert poisson_binomial_sf(p, np.array([10]))[0] == pytest.approx(1e-30, rel=1e-9)
    assert poisson_binomial_sf(p, np.array([0]))[0] == 1.0


def test_poisson_binomial_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="n_components, n_trials"):
        poisson_binomial_sf(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="observed must have shape"):
        poisson_binomial_sf(np.zeros((2, 3)), np.zeros(3))


def test_benjamini_hochberg_by_hand() -> None:
    # sorted: 0.005 (x5/1 = 0.025), 0.01 (x5/2 = 0.025), 0.03 (x5/3 = 0.05), 0.04 (x5/4 = 0.05), 0.5 (x5/5)
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.005, 0.5]))
    np.testing.assert_allclose(q, [0.025, 0.05, 0.05, 0.025, 0.5])
    # monotone: the smaller p's adjusted value is capped by the larger one's (0.04 * 2 = 0.08 > 0.041)
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.04, 0.041])), [0.041, 0.041])
    # capped at 1; NaN is no test and leaves m at 2
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.9, np.nan, 0.8])), [0.9, np.nan, 0.9])
    assert benjamini_hochberg(np.array([])).shape == (0,)


def test_relations_hold_a_component_if_any_circuit_does() -> None:
    # relation 0 has two circuits (p 0.5 and 0.2), relation 1 one (p 0.3)
    null = np.array([[0.5, 0.0], [0.2, 1.0], [0.3, 0.1]])
    of = np.array([0, 0, 1])
    np.testing.assert_allclose(relation_null(null, of, 2), [[1 - 0.5 * 0.8, 1.0], [0.3, 0.1]])
    held = np.array([[False, True], [False, False], [True, False]])
    assert relation_held(held, of, 2).tolist() == [[False, True], [True, False]]


def test_statistics_by_hand() -> None:
    held = np.array([[True, True, False], [True, True, False], [True, False, False]])
    null = np.array([[0.5, 0.95, 0.1], [0.2, 0.9, 0.1], [0.1, 0.95, 0.1]])
    stats = recurrence_statistics(held, null)
    assert stats.observed.tolist() == [3, 2, 0]
    np.testing.assert_allclose(stats.expected, [0.8, 2.8, 0.3])
    np.testing.assert_allclose(stats.enrichment, [3 / 0.8, 2 / 2.8, 0.0])
    p0 = 0.5 * 0.2 * 0.1
    p1 = brute_force_sf(null[:, 1], 2)
    np.testing.assert_allclose(stats.p_value, [p0, p1, 1.0])
    np.testing.assert_allclose(stats.q_value, benjamini_hochberg(np.array([p0, p1, 1.0])))
    assert (
        stats.plumbing.tolist() == [False, PLUMBING <= (0.95 + 0.9 + 0.95) / 3, False] == [False, True, False]
    )
    generic, control = generic_flags(held, null)
    assert generic.tolist() == [p0 < GENERIC_ALPHA, False, False] == [True, False, False]
    assert control.observed.tolist() == [3, 2, 0]


# ----------------------------------------------------------------------- the synthetic catalogue (Done when)

GRAPH = GraphIndex(8, 8)  # 72 heads and MLPs
PLANTED = GRAPH.head_writer(7, 7)  # a last-layer head: random circuits seldom hold it (about 0.25 here)
N_RELATIONS = 10
SIZES = (8, 24)  # heads and MLPs of each relation's random circuit (before the planted head)


@cache
def null_of(size: int) -> np.ndarray:
    """The null the store keeps for a circuit of `size` heads and MLPs (atlas.db.store.null_columns)."""
    return inclusion_probabilities(GRAPH, "edge", size, seed=size)


def synthetic_catalogue(seed: int, plant: bool = True) -> list[CircuitComponents]:
    """One circuit per relation: a random connected circuit (the null's own sampler), plus the planted head
    on an input -> head -> logits path."""
    rng = np.random.default_rng(1_000 + seed)
    circuits = []
    for r in range(N_RELATIONS):
        kept = random_components(GRAPH, int(rng.integers(SIZES[0], SIZES[1] + 1)), rng)
        if plant:
            kept[PLANTED] = True
        circuits.append(
            CircuitComponents(
                relation=f"relation_{r}",
                components=frozenset(GRAPH.writer_names[w] for w in np.flatnonzero(kept)),
                null=null_of(int(kept.sum())),
            )
        )
    return circuits


def test_planted_head_is_found_and_nothing_else_in_95_percent_of_seeds() -> None:
    seeds = 200
    planted = GRAPH.writer_names[PLANTED]
    success, found, false_seeds = 0, 0, 0
    for seed in range(seeds):
        rows = recurrence_table(GRAPH, synthetic_catalogue(seed), max_q=None)
        q = {row.component: row.q_value for row in rows}
        hit = q.get(planted, 1.0) < 0.01
        others = any(value < 0.05 for name, value in q.items() if name != planted)
        found += hit
        false_seeds += others
        success += hit and not others
    assert null_of(SIZES[1])[PLANTED] > 0.1, "the planted head is not trivially rare under the null"
    assert success >= 0.95 * seeds, (success, found, false_seeds)
    assert found == seeds


def test_without_a_planted_head_nothing_is_significant_in_95_percent_of_seeds() -> None:
    seeds = 100
    quiet = sum(
        not recurrence_table(GRAPH, synthetic_catalogue(seed, plant=False), max_q=0.05)
        for seed in range(seeds)
    )
    assert quiet >= 0.95 * seeds


def test_recurrence_table_matches_the_statistics_and_flags_generic_components() -> None:
    circuits = synthetic_catalogue(0)
    controls = [
        CircuitComponents(f"control_{k}", frozenset({"a7.h7", "a6.h0"}), null_of(20)) for k in range(3)
    ]
    rows = recurrence_table(GRAPH, circuits, controls, max_q=None)
    by_name = {row.component: row for row in rows}
    held = np.array([[name in c.components for name in GRAPH.writer_names[1:]] for c in circuits])
    null = np.array([c.null[1:] for c in circuits], dtype=np.float64)
    stats = recurrence_statistics(held, null)
    for i, name in enumerate(GRAPH.writer_names[1:]):
        if not stats.observed[i]:
            assert name not in by_name
            continue
        row = by_name[name]
        assert row.count == stats.observed[i] == len(row.relations)
        assert row.expected == pytest.approx(null[:, i].sum())
        assert row.q_value == pytest.approx(stats.q_value[i])
        assert row.plumbing == bool(null[:, i].mean() >= PLUMBING)
        # generic: in all 3 controls, each with null p = null_of(20)[writer]
        p_controls = float(null_of(20)[i + 1]) ** 3
        assert row.generic == (name in {"a7.h7", "a6.h0"} and p_controls < GENERIC_ALPHA)
    assert rows[0].component == "a7.h7" and rows[0].generic is True
    assert [r.q_value for r in rows] == sorted(r.q_value for r in rows)
    significant = recurrence_table(GRAPH, circuits)
    assert [r.component for r in significant] == [r.component for r in rows if r.q_value <= 0.05]
    assert all(r.generic is None for r in significant)  # no controls given
    lines = format_recurrence(significant, N_RELATIONS)
    assert lines[1].split()[:2] == ["a7.h7", str(N_RELATIONS)] and lines[1].endswith("all")


def test_circuit_components_carry_the_stored_null() -> None:
    circuit = circuit_components(GRAPH, "r", ["input", "a0.h1", "m3", "logits"], "edge")
    assert circuit.components == frozenset({"a0.h1", "m3"})
    np.testing.assert_array_equal(circuit.null, inclusion_probabilities(GRAPH, "edge", 2, seed=2))
    node = circuit_components(GRAPH, "r", ["a0.h1", "m3", "a2.h2"], "node")
    np.testing.assert_allclose(node.null[1:], 3 / GRAPH.n_components)


def test_recurrence_table_rejects_bad_circuits() -> None:
    with pytest.raises(ValueError, match="null has shape"):
        recurrence_table(GRAPH, [CircuitComponents("r", frozenset({"m0"}), np.zeros(3))])
    with pytest.raises(ValueError, match="no component named m99"):
        recurrence_table(GRAPH, [CircuitComponents("r", frozenset({"m99"}), null_of(20))])
