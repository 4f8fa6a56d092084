"""Read-side queries on three stored circuits made by hand, so every answer can be checked by eye.

    A name_gender (bias):             input->a0.h0<q>, a0.h0->m0, m0->logits, input->a1.h2<v>, a1.h2->logits
    B object_superclass (commonsense): input->a0.h0<q>, a0.h0->m0, m0->logits, input->m2, m2->logits
    C substance_phase (commonsense):   input->a0.h0<k>, a0.h0->logits, input->a1.h2<v>, a1.h2->logits

Heads and MLPs: A {a0.h0, m0, a1.h2}, B {a0.h0, m0, m2}, C {a0.h0, a1.h2}.
"""

from __future__ import annotations

import pytest
from db_helpers import CODE_VERSION, HAND, Discovered, with_circuit
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from atlas.db import CatalogueError
from atlas.db.queries import (
    _circuit_sets,
    compare_circuits,
    jaccard,
    list_circuits,
    overlap_matrix,
)
from atlas.db.recurrence import recurring_components
from atlas.db.store import store_discovery


@pytest.fixture
def ids(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> list[int]:
    """Circuit ids of A, B, C."""
    out = []
    for name, edges in HAND.items():
        d = discovered[name]
        result = with_circuit(d.result, edges)
        out.append(store_discovery(engine, result, d.model, d.relation, corpus_sha, CODE_VERSION))
    return out


def _recurring(engine: Engine, **filters: object) -> list[tuple[str, int, list[str]]]:
    """Components, relation counts and relations, most relations first, then in graph order (the query
    lists the most significant first: tests/db/test_db_recurrence.py checks that order)."""
    found = recurring_components(engine, "tiny-llama", **filters)  # type: ignore[arg-type]
    ordered = sorted(found, key=lambda c: (-c.n_relations, c.layer or 0, 99 if c.head is None else c.head))
    return [(c.component, c.n_relations, c.relations) for c in ordered]


def test_recurring_components(engine: Engine, ids: list[int]) -> None:
    assert _recurring(engine) == [
        ("a0.h0", 3, ["name_gender", "object_superclass", "substance_phase"]),
        ("m0", 2, ["name_gender", "object_superclass"]),
        ("a1.h2", 2, ["name_gender", "substance_phase"]),
    ]
    assert _recurring(engine, category="commonsense") == [
        ("a0.h0", 2, ["object_superclass", "substance_phase"])
    ]
    assert _recurring(engine, category="commonsense", min_count=1) == [
        ("a0.h0", 2, ["object_superclass", "substance_phase"]),
        ("m0", 1, ["object_superclass"]),
        ("a1.h2", 1, ["substance_phase"]),
        ("m2", 1, ["object_superclass"]),
    ]
    assert _recurring(engine, min_count=3) == [
        ("a0.h0", 3, ["name_gender", "object_superclass", "substance_phase"])
    ]
    assert _recurring(engine, method="eap") == []
    assert recurring_components(engine, "no-such-model") == []
    found = recurring_components(engine, "tiny-llama")[0]
    assert (found.kind, found.layer, found.head) == ("head", 0, 0)


def test_compare_two(engine: Engine, ids: list[int]) -> None:
    a, b, _ = ids
    result = compare_circuits(engine, [a, b])
    assert result.shared_nodes == ["a0.h0", "m0"]
    assert result.shared_edges == sorted(["input->a0.h0<q>", "a0.h0->m0", "m0->logits"])
    assert result.node_jaccard == pytest.approx(2 / 4)
    assert result.edge_jaccard == pytest.approx(3 / 7)
    assert [c.relation for c in result.circuits] == ["name_gender", "object_superclass"]
    assert [(c.n_nodes, c.n_edges) for c in result.circuits] == [(5, 5), (5, 5)]


def test_compare_three(engine: Engine, ids: list[int]) -> None:
    a, b, c = ids
    result = compare_circuits(engine, [a, b, c])
    assert result.shared_nodes == ["a0.h0"]
    assert result.shared_edges == []
    assert result.node_jaccard == pytest.approx(1 / 4)
    assert result.edge_jaccard == 0.0
    pairs = {(p["a"], p["b"]): (p["node_jaccard"], p["edge_jaccard"]) for p in result.pairwise}
    assert pairs == {
        (a, b): pytest.approx((2 / 4, 3 / 7)),
        (a, c): pytest.approx((2 / 3, 2 / 7)),
        (b, c): pytest.approx((1 / 4, 0.0)),
    }


def test_compare_bad_ids(engine: Engine, ids: list[int]) -> None:
    with pytest.raises(CatalogueError, match="at least two"):
        compare_circuits(engine, [ids[0], ids[0]])
    with pytest.raises(CatalogueError, match="no circuit with id 9999"):
        compare_circuits(engine, [ids[0], 9999])


def _flat(matrix: list[list[float]]) -> list[float]:
    assert all(len(row) == len(matrix) for row in matrix)
    return [value for row in matrix for value in row]


def test_overlap_matrix(engine: Engine, ids: list[int]) -> None:
    result = overlap_matrix(engine, "tiny-llama")
    assert [c.id for c in result.circuits] == ids
    assert _flat(result.node_jaccard) == pytest.approx([1, 2 / 4, 2 / 3, 2 / 4, 1, 1 / 4, 2 / 3, 1 / 4, 1])
    assert _flat(result.edge_jaccard) == pytest.approx([1, 3 / 7, 2 / 7, 3 / 7, 1, 0, 2 / 7, 0, 1])
    assert [c.id for c in overlap_matrix(engine, "tiny-llama", category="commonsense").circuits] == ids[1:]
    assert overlap_matrix(engine, "no-such-model").circuits == []


def test_list_with_filters_and_keyset_pages(engine: Engine, ids: list[int]) -> None:
    first = list_circuits(engine, limit=2)
    assert [c.id for c in first.items] == ids[:2] and first.next_after == ids[1]
    second = list_circuits(engine, limit=2, after=first.next_after)
    assert [c.id for c in second.items] == ids[2:] and second.next_after is None
    assert [c.id for c in list_circuits(engine, limit=3).items] == ids
    assert list_circuits(engine, limit=3).next_after is None
    assert [c.id for c in list_circuits(engine, category="commonsense").items] == ids[1:]
    assert [c.relation for c in list_circuits(engine, relation="substance_phase").items] == [
        "substance_phase"
    ]
    assert list_circuits(engine, model="tiny-llama", method="eap-ig").items[0].method == "eap-ig"
    assert list_circuits(engine, method="eap").items == []
    assert list_circuits(engine, model="other").items == []
    summary = list_circuits(engine, relation="name_gender").items[0]
    assert (summary.n_nodes, summary.n_edges, summary.top_n, summary.selection) == (5, 5, 30, "top_n")
    with pytest.raises(CatalogueError):
        list_circuits(engine, limit=0)


def test_overlap_and_recurring_match_sets(
    engine: Engine,
    ids: list[int],
    discovered: dict[str, Discovered],
    node_discovered: Discovered,
    corpus_sha: str,
) -> None:
    """The matrix (one 0/1 matrix product) equals the pairwise set Jaccard, value for value, and the recurring
    components the per-relation node sets, on the hand circuits, the real top-30 circuits and a node-level
    circuit of the same model."""
    for d in discovered.values():
        ids.append(store_discovery(engine, d.result, d.model, d.relation, corpus_sha, "test-real"))
    d = node_discovered
    ids.append(store_discovery(engine, d.result, d.model, d.relation, corpus_sha, "test-real"))
    result = overlap_matrix(engine, "tiny-llama")
    assert [c.id for c in result.circuits] == ids
    with Session(engine) as session:
        summaries, nodes, edges, _ = _circuit_sets(session, ids)
    assert result.circuits == summaries
    assert result.node_jaccard == [[jaccard(nodes[a], nodes[b]) for b in ids] for a in ids]
    assert result.edge_jaccard == [[jaccard(edges[a], edges[b]) for b in ids] for a in ids]
    assert [c.id for c in overlap_matrix(engine, "tiny-llama", method="eap").circuits] == []
    relations: dict[str, set[str]] = {}
    for summary in summaries:
        for name in nodes[summary.id]:
            relations.setdefault(name, set()).add(summary.relation)
    found = recurring_components(engine, "tiny-llama", min_count=1)
    assert {c.component: c.relations for c in found} == {n: sorted(r) for n, r in relations.items()}
    assert sorted(c.n_relations for c in found) == sorted(len(r) for r in relations.values())
