"""Each circuit's member sets (`Circuit.node_set`, `edge_set`: sorted int32 graph indices of its heads/MLPs
and of its edges), which the overlap matrix and the recurring-components query read instead of the node and
edge rows: written with the circuit, equal to its in-circuit rows, filled by migration 0003 for circuits
stored before it, and the queries' answers unchanged when they are missing (a row written by hand) or when
one model name spans two graph shapes."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from db_helpers import CODE_VERSION, HAND, Discovered, with_circuit
from sqlalchemy import Engine, inspect, select, update
from sqlalchemy.orm import Session

from atlas.core.circuit import Circuit as CoreCircuit
from atlas.core.graph import Graph
from atlas.db.engine import downgrade, make_engine, upgrade
from atlas.db.models import Circuit, Model, Run
from atlas.db.queries import (
    _canonical,
    _circuit_sets,
    _jaccard_matrix,
    jaccard,
    overlap_matrix,
)
from atlas.db.recurrence import recurring_components
from atlas.db.store import ModelInfo, count_rows, store_discovery


def _store_all(
    engine: Engine, discovered: dict[str, Discovered], node_discovered: Discovered, corpus_sha: str
) -> list[int]:
    """The hand circuits A, B, C, the real top-30 circuits and a node-level circuit: their ids."""
    ids = []
    for name, edges in HAND.items():
        d = discovered[name]
        ids.append(
            store_discovery(engine, with_circuit(d.result, edges), d.model, d.relation, corpus_sha, "hand")
        )
    for d in [*discovered.values(), node_discovered]:
        ids.append(store_discovery(engine, d.result, d.model, d.relation, corpus_sha, CODE_VERSION))
    return ids


def _stored_sets(engine: Engine, ids: list[int]) -> dict[int, tuple[bytes | None, bytes | None]]:
    with Session(engine) as session:
        rows = session.execute(
            select(Circuit.id, Circuit.node_set, Circuit.edge_set).where(Circuit.id.in_(ids))
        )
        return {i: (n, e) for i, n, e in rows}


def _decoded(graph: Graph, node_set: bytes | None, edge_set: bytes | None) -> tuple[set[str], set[str]]:
    assert node_set is not None and edge_set is not None
    nodes, edges = np.frombuffer(node_set, dtype="<i4"), np.frombuffer(edge_set, dtype="<i4")
    assert (np.diff(nodes) > 0).all() and (np.diff(edges) > 0).all()  # sorted, no repeats
    return (
        {graph.writer_names[w] for w in nodes.tolist()},
        {graph.edge_name(*divmod(f, graph.n_readers)) for f in edges.tolist()},
    )


def test_member_sets_equal_the_in_circuit_rows(
    engine: Engine, discovered: dict[str, Discovered], node_discovered: Discovered, corpus_sha: str
) -> None:
    ids = _store_all(engine, discovered, node_discovered, corpus_sha)
    graph = next(iter(discovered.values())).result.circuit.graph
    stored = _stored_sets(engine, ids)
    with Session(engine) as session:
        _, nodes, edges, _ = _circuit_sets(session, ids)
        levels = dict(session.execute(select(Circuit.id, Circuit.level)).tuples().all())
    assert sorted(levels.values()) == ["edge"] * (len(ids) - 1) + ["node"]
    for i in ids:
        assert nodes[i] and edges[i]
        assert _decoded(graph, *stored[i]) == (nodes[i], edges[i])
    a = ids[0]  # hand circuit A, by eye
    assert _decoded(graph, *stored[a]) == ({"a0.h0", "m0", "a1.h2"}, set(HAND["name_gender"]))


def test_migration_fills_circuits_stored_before_it(
    empty_url: str, discovered: dict[str, Discovered], node_discovered: Discovered, corpus_sha: str
) -> None:
    """Circuits stored at head, their columns dropped by a downgrade to 0002 (rows intact) and filled again
    by the upgrade through 0003: equal to what store_discovery wrote, and the queries' answers unchanged."""
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        ids = _store_all(engine, discovered, node_discovered, corpus_sha)
        written = _stored_sets(engine, ids)
        overlap, recurring = overlap_matrix(engine, "tiny-llama"), recurring_components(engine, "tiny-llama")
        # Tables of revision 0004 (head roles, edits, analyses) go with the downgrade below it; the rest stay.
        later = {"head_roles", "edits", "edit_components", "analyses"}
        rows = {table: n for table, n in count_rows(engine).items() if table not in later}
        assert rows["circuit_edges"] > 0
        engine.dispose()
        downgrade(empty_url, "0002")
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("circuits")}
        assert "node_set" not in columns and "edge_set" not in columns
        upgrade(empty_url)  # 0003 and any later revision
        after = {table: n for table, n in count_rows(engine).items() if table not in later}
        assert after == rows  # the downgrade deleted nothing else (no cascade from a table copy)
        assert _stored_sets(engine, ids) == written
        # What 0005 added (the size search, held-out top-1) went with the downgrade to 0002: compare the rest.
        assert _before_0005(overlap_matrix(engine, "tiny-llama")) == _before_0005(overlap)
        # The stability and roles went with the downgrade below 0004/0005; the null is computed again.
        assert _counted(recurring_components(engine, "tiny-llama")) == _counted(recurring)
    finally:
        engine.dispose()


def _before_0005(matrix: Any) -> Any:
    later = ("target_met", "top1_circuit_heldout")
    return replace(matrix, circuits=[replace(c, **dict.fromkeys(later)) for c in matrix.circuits])


def _counted(found: list[Any]) -> list[tuple[Any, ...]]:
    return [(c.component, c.relations, c.expected, c.p_value, c.q_value, c.plumbing) for c in found]


def test_queries_read_the_rows_of_circuits_without_member_sets(
    engine: Engine, discovered: dict[str, Discovered], node_discovered: Discovered, corpus_sha: str
) -> None:
    ids = _store_all(engine, discovered, node_discovered, corpus_sha)
    queries = {
        "overlap": lambda: overlap_matrix(engine, "tiny-llama"),
        "overlap commonsense": lambda: overlap_matrix(engine, "tiny-llama", category="commonsense"),
        "recurring": lambda: recurring_components(engine, "tiny-llama", min_count=1),
    }
    expected = {name: query() for name, query in queries.items()}
    with Session(engine) as session, session.begin():
        session.execute(update(Circuit).where(Circuit.id.in_(ids[1::2])).values(node_set=None, edge_set=None))
    assert {name: query() for name, query in queries.items()} == expected
    with Session(engine) as session, session.begin():
        session.execute(update(Circuit).values(node_set=None, edge_set=None))
    assert {name: query() for name, query in queries.items()} == expected


def test_one_model_name_two_graph_shapes(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    """Models of one name compare by component names, also when their graphs differ in shape (the member sets'
    indices then differ for one name)."""
    d = discovered["name_gender"]
    hand = with_circuit(d.result, HAND["name_gender"])
    ids = [store_discovery(engine, hand, d.model, d.relation, corpus_sha, CODE_VERSION)]
    small = d.result.circuit.graph
    big = Graph(small.n_layers + 1, small.n_heads + 2)
    other = replace(
        ModelInfo.of(d.model), n_layers=big.n_layers, n_heads=big.n_heads, weights_sha256="f" * 64
    )
    random_circuit = CoreCircuit(big, torch.zeros(big.n_writers, big.n_readers, dtype=torch.bool))
    for k, (name, names) in enumerate(
        {
            "name_gender": [*HAND["name_gender"], "a3.h5->logits", "input->a3.h5<k>", "a2.h4->m3"],
            "object_superclass": [*HAND["object_superclass"], "a0.h3->a1.h5<v>", "a1.h5->logits"],
        }.items()
    ):
        mask = torch.zeros(big.n_writers, big.n_readers, dtype=torch.bool)
        for edge in names:
            mask[big.parse_edge(edge)] = True
        big_result = replace(
            discovered[name].result,
            circuit=CoreCircuit(big, mask),
            random=random_circuit,
            scores=torch.rand(big.n_writers, big.n_readers) * big.valid_edges,
            stability=None,
        )
        ids.append(
            store_discovery(engine, big_result, other, discovered[name].relation, corpus_sha, f"big{k}")
        )
    with Session(engine) as session:
        assert session.scalar(select(Model.id).where(Model.n_layers == big.n_layers)) is not None
        assert len(set(session.scalars(select(Run.model_id)))) == 2
        _, nodes, edges, _ = _circuit_sets(session, ids)
    result = overlap_matrix(engine, "tiny-llama")
    assert [c.id for c in result.circuits] == ids
    assert result.node_jaccard == [[jaccard(nodes[a], nodes[b]) for b in ids] for a in ids]
    assert result.edge_jaccard == [[jaccard(edges[a], edges[b]) for b in ids] for a in ids]
    assert result.edge_jaccard[0][2] == pytest.approx(3 / 9)  # A's edges and B's plus two of the big graph's
    found = {c.component: c.relations for c in recurring_components(engine, "tiny-llama", min_count=1)}
    assert found["a0.h0"] == ["name_gender", "object_superclass"]  # both shapes: one name
    assert found["a3.h5"] == ["name_gender"] and found["a1.h5"] == ["object_superclass"]
    relations: dict[str, set[str]] = {}
    for i, relation in zip(ids, ["name_gender", "name_gender", "object_superclass"], strict=True):
        for name in nodes[i]:
            relations.setdefault(name, set()).add(relation)
    assert found == {name: sorted(r) for name, r in relations.items()}


def test_canonical_indices_keep_names() -> None:
    small, big = Graph(2, 3), Graph(4, 5)
    nodes = np.arange(small.n_writers)
    edges = np.flatnonzero(small.valid_edges.flatten().numpy())
    mapped_nodes, mapped_edges = _canonical(nodes, edges, (2, 3), (4, 5))
    assert [big.writer_names[w] for w in mapped_nodes.tolist()] == list(small.writer_names)
    assert [big.edge_name(*divmod(f, big.n_readers)) for f in mapped_edges.tolist()] == [
        small.edge_name(*divmod(f, small.n_readers)) for f in edges.tolist()
    ]
    same_nodes, same_edges = _canonical(nodes, edges, (2, 3), (2, 3))
    assert same_nodes.tolist() == nodes.tolist() and same_edges.tolist() == edges.tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 40, 150])
def test_jaccard_matrix_equals_set_jaccard(n: int) -> None:
    """Rare keys counted pair by pair, common ones by the matrix product, huge keys renumbered first: every
    value exactly the set Jaccard (empty sets included)."""
    rng = random.Random(n)
    for universe in (60, 1 << 30):
        popular = [rng.randrange(universe) for _ in range(8)]
        sets = [
            {rng.randrange(universe) for _ in range(rng.randrange(0, 30))}
            | set(rng.sample(popular, rng.randrange(9)))
            if i % 7 != 3
            else set()
            for i in range(n)
        ]
        rows = np.repeat(np.arange(n), [len(s) for s in sets])
        keys = np.asarray([k for s in sets for k in sorted(s)], dtype=np.int64)
        named = [{str(k) for k in s} for s in sets]
        assert _jaccard_matrix(rows, keys, n).tolist() == [[jaccard(a, b) for b in named] for a in named]
    no_keys = np.zeros(0, dtype=np.int64)
    assert _jaccard_matrix(no_keys, no_keys, n).tolist() == [[1.0] * n] * n
