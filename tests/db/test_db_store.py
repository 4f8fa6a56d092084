"""Storing discovery results: read back equal, idempotent, re-cut from the stored matrix, and bad input
rejected with nothing stored."""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from db_helpers import CODE_VERSION, Discovered, store_when_told
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.core.circuit import top_n, top_n_nodes
from atlas.db import CatalogueError, store
from atlas.db.models import Circuit, CircuitEdge, Run
from atlas.db.queries import circuit_detail
from atlas.db.recut import load_scores, recut
from atlas.db.store import (
    ModelInfo,
    add_facts,
    count_rows,
    find_circuit,
    import_relations,
    record_failure,
    store_discovery,
)
from atlas.spec.corpus import Fact as CorpusFact


def _store(engine: Engine | Session, d: Discovered, corpus_sha: str) -> int:
    return store_discovery(engine, d.result, d.model, d.relation, corpus_sha, CODE_VERSION)


def test_store_and_read_back(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> None:
    d = discovered["name_gender"]
    result = d.result
    circuit_id = _store(engine, d, corpus_sha)
    detail = circuit_detail(engine, circuit_id)
    assert (detail["model"], detail["relation"], detail["category"]) == ("tiny-llama", "name_gender", "bias")
    assert [n["node"] for n in detail["nodes"]] == result.circuit.nodes
    graph = result.circuit.graph
    stored = {e["edge"]: e["score"] for e in detail["edges"]}
    assert set(stored) == set(result.circuit.edge_names())
    for name, score in stored.items():
        assert score == pytest.approx(float(result.scores[graph.parse_edge(name)]), rel=1e-6, abs=1e-9)
    assert (detail["n_nodes"], detail["n_edges"]) == (result.circuit.n_nodes, result.circuit.n_edges)
    discovery = detail["evaluations"]["discovery"]
    assert discovery["hit_at_10"]["circuit"] == pytest.approx(result.discovery.hit_circuit)
    if math.isfinite(result.discovery.faithfulness):
        assert discovery["faithfulness"] == pytest.approx(result.discovery.faithfulness)
    assert result.curve is not None
    assert discovery["curve"]["area"] == pytest.approx(result.curve.area)
    assert [p["n_edges"] for p in discovery["curve"]["points"]] == [p.n_edges for p in result.curve.points]
    assert ("heldout" in detail["evaluations"]) == (result.heldout is not None)
    assert detail["run"]["facts"]["discovery"] == result.counts.discovery
    # The whole score matrix comes back (zero outside the valid edges).
    expected = result.scores * graph.valid_edges
    assert np.array_equal(load_scores(engine, circuit_id).scores, expected.numpy())
    # Edges selected by score but pruned away are kept too, flagged out of the circuit.
    with Session(engine) as session:
        flags = session.scalars(
            select(CircuitEdge.in_circuit).where(CircuitEdge.circuit_id == circuit_id)
        ).all()
    assert sum(flags) == result.circuit.n_edges
    assert len(flags) == int(
        (result.circuit.edges.numpy() | store.selected_edges(graph, result.scores, result.params)).sum()
    )


def test_store_again_finds_the_run(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d = discovered["name_gender"]
    first = _store(engine, d, corpus_sha)
    before = count_rows(engine)
    assert _store(engine, d, corpus_sha) == first
    assert count_rows(engine) == before
    assert before["runs"] == before["circuits"] == 1
    assert find_circuit(engine, d.model, "name_gender", d.result.params, corpus_sha, CODE_VERSION) == first
    assert (
        find_circuit(engine, d.model, "name_gender", replace(d.result.params, seed=1), corpus_sha, "x")
        is None
    )
    # Another parameter is another run.
    other = replace(d.result, params=replace(d.result.params, ig_steps=2))
    assert store_discovery(engine, other, d.model, d.relation, corpus_sha, CODE_VERSION) != first
    assert count_rows(engine)["runs"] == 2


def test_failed_run_is_taken_over(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> None:
    d = discovered["object_superclass"]
    run_id = record_failure(engine, d.model, d.relation, d.result.params, corpus_sha, CODE_VERSION, "boom")
    circuit_id = _store(engine, d, corpus_sha)
    with Session(engine) as session:
        runs = session.scalars(select(Run)).all()
        assert [(r.id, r.status, r.error) for r in runs] == [(run_id, "done", None)]
        assert session.get_one(Circuit, circuit_id).run_id == run_id


def test_store_inside_callers_transaction(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d = discovered["name_gender"]
    with Session(engine) as session:
        session.begin()
        _store(session, d, corpus_sha)
        session.rollback()
    assert count_rows(engine)["circuits"] == 0
    with Session(engine) as session:
        circuit_id = _store(session, d, corpus_sha)  # not in a transaction: commits its own
    assert (
        find_circuit(engine, d.model, "name_gender", d.result.params, corpus_sha, CODE_VERSION) == circuit_id
    )


@pytest.mark.parametrize("n", [5, 30, 80, 262])
def test_recut_equals_top_n(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str, n: int
) -> None:
    d = discovered["substance_phase"]
    circuit_id = _store(engine, d, corpus_sha)
    again = recut(engine, circuit_id, n)  # with the run's own ranking
    expected = top_n(d.result.circuit.graph, d.result.scores, n, d.result.params.ranking)
    assert {e["edge"] for e in again.edges} == set(expected.edge_names())
    assert [x["node"] for x in again.nodes] == expected.nodes


def test_node_level_circuit(engine: Engine, node_discovered: Discovered, corpus_sha: str) -> None:
    d = node_discovered
    assert d.result.circuit.level == "node" and d.result.scores.dim() == 1
    circuit_id = _store(engine, d, corpus_sha)
    detail = circuit_detail(engine, circuit_id)
    assert [n["node"] for n in detail["nodes"]] == d.result.circuit.nodes
    assert {e["edge"] for e in detail["edges"]} == set(d.result.circuit.edge_names())
    assert np.array_equal(load_scores(engine, circuit_id).scores, d.result.scores.float().numpy())
    graph = d.result.circuit.graph
    expected = top_n_nodes(graph, d.result.scores, 3, d.result.params.ranking)
    assert {e["edge"] for e in recut(engine, circuit_id, 3).edges} == set(expected.edge_names())


# ------------------------------------------------------------------------------------------------ bad input


def _unchanged(engine: Engine, before: dict[str, int]) -> None:
    assert count_rows(engine) == before


def test_circuit_of_unknown_model(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> None:
    d = discovered["name_gender"]
    before = count_rows(engine)
    with pytest.raises(CatalogueError, match="unknown model 'no-such-model'"):
        store_discovery(engine, d.result, "no-such-model", d.relation, corpus_sha, CODE_VERSION)
    _unchanged(engine, before)
    # A circuit that is not of the model given.
    other = replace(ModelInfo.of(d.model), name="other-model")
    with pytest.raises(CatalogueError, match="is of model 'tiny-llama', not of 'other-model'"):
        store_discovery(engine, d.result, other, d.relation, corpus_sha, CODE_VERSION)
    _unchanged(engine, before)
    # Once catalogued, the name is enough.
    circuit_id = _store(engine, d, corpus_sha)
    assert store_discovery(engine, d.result, "tiny-llama", d.relation, corpus_sha, CODE_VERSION) == circuit_id


def test_score_matrix_of_wrong_shape(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d = discovered["name_gender"]
    before = count_rows(engine)
    assert before["models"] == 0
    for scores in (d.result.scores[:, :-1], d.result.scores[0], d.result.scores.T):
        bad = replace(d.result, scores=scores)
        with pytest.raises(CatalogueError, match="score matrix has shape"):
            store_discovery(engine, bad, d.model, d.relation, corpus_sha, CODE_VERSION)
        _unchanged(engine, before)  # not even the model or relation rows


def test_duplicate_relation_with_other_content(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d = discovered["name_gender"]
    _store(engine, d, corpus_sha)
    before = count_rows(engine)
    changed = replace(d.relation, facts=d.relation.facts[:-1])
    with pytest.raises(CatalogueError, match=r"already catalogued with other content.*facts"):
        import_relations(engine, [changed])
    _unchanged(engine, before)
    retitled = replace(d.relation, title="something else")
    with pytest.raises(CatalogueError, match="differs in title"):
        store_discovery(engine, d.result, d.model, retitled, corpus_sha, CODE_VERSION)
    _unchanged(engine, before)
    # In a batch, a conflict rolls back the relations before it too.
    fresh = discovered["substance_phase"].relation
    with pytest.raises(CatalogueError):
        import_relations(engine, [fresh, changed])
    _unchanged(engine, before)
    # The same content again is fine, and a different source path is not a difference.
    assert import_relations(engine, [replace(d.relation, source="elsewhere.json"), fresh]) == {
        "added": 1,
        "unchanged": 1,
        "facts": len(set(fresh.facts)),
    }


def test_fact_of_missing_relation(engine: Engine, discovered: dict[str, Discovered]) -> None:
    before = count_rows(engine)
    with pytest.raises(CatalogueError, match="unknown relation 'no_such_relation'"):
        add_facts(engine, "no_such_relation", [CorpusFact("France", "Paris")])
    _unchanged(engine, before)
    relation = discovered["name_gender"].relation
    import_relations(engine, [replace(relation, facts=relation.facts[:3])])
    assert add_facts(engine, relation.name, relation.facts[:5]) == 2
    # The stored relation now has the content of the first five facts.
    import_relations(engine, [replace(relation, facts=relation.facts[:5])])


def test_failure_midway_stores_nothing(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = discovered["name_gender"]

    def broken(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_copy_edges", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _store(engine, d, corpus_sha)
    assert all(count == 0 for count in count_rows(engine).values())


def test_concurrent_writers_store_one_copy(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str, tmp_path: Path
) -> None:
    """Four writer processes (each with its own engine and connections, as workers are) racing to store the
    same run (model and relation new too) all get the one circuit."""
    d = discovered["name_gender"]
    payload = tmp_path / "payload.pickle"
    payload.write_bytes(pickle.dumps((d.result, ModelInfo.of(d.model), d.relation, corpus_sha)))
    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    writers = [
        context.Process(target=store_when_told, args=(url, str(payload), ready, go, results))
        for _ in range(4)
    ]
    for writer in writers:
        writer.start()
    try:
        pids = {ready.get(timeout=180) for _ in writers}  # all loaded and connected: then start together
        go.set()
        outcomes = [results.get(timeout=180) for _ in writers]
    finally:
        go.set()
        for writer in writers:
            writer.join(timeout=60)
            if writer.is_alive():
                writer.kill()
    assert len(pids) == 4 and os.getpid() not in pids
    assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
    ids = [value for _, value in outcomes]
    assert len(set(ids)) == 1
    counts = count_rows(engine)
    assert (counts["models"], counts["relations"], counts["runs"], counts["circuits"]) == (1, 1, 1, 1)
    selected = store.selected_edges(d.result.circuit.graph, d.result.scores, d.result.params)
    assert counts["circuit_edges"] == int((d.result.circuit.edges.numpy() | selected).sum())


def test_edges_bulk_loaded(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> None:
    """PostgreSQL loads edges with COPY (outside SQLAlchemy's statement events); SQLite with executemany."""
    from sqlalchemy import event

    statements: list[tuple[str, bool]] = []

    def record(
        conn: object, cursor: object, statement: str, params: object, context: object, many: bool
    ) -> None:
        statements.append((statement, many))

    event.listen(engine, "before_cursor_execute", record)
    try:
        circuit_id = _store(engine, discovered["name_gender"], corpus_sha)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    edge_inserts = [many for statement, many in statements if "INSERT INTO circuit_edges" in statement]
    assert edge_inserts == ([] if engine.dialect.name == "postgresql" else [True])
    assert circuit_detail(engine, circuit_id)["n_edges"] == len(circuit_detail(engine, circuit_id)["edges"])
