"""Runs keyed by the hash of their canonical parameters (migration 0005): a new parameter is a new key without
a column, equal parameters find the stored run, and the migration keeps every circuit stored before it (on
SQLite the `runs` table is copied; with foreign keys on, dropping the old copy would cascade)."""

from __future__ import annotations

from dataclasses import replace

from db_helpers import CODE_VERSION, PARAMS, Discovered
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from atlas.db.engine import downgrade, make_engine, upgrade
from atlas.db.models import Run
from atlas.db.store import count_rows, find_circuit, store_discovery
from atlas.spec.params import params_key


def test_parameters_without_a_column_still_key_runs(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d = discovered["name_gender"]
    first = store_discovery(engine, d.result, d.model, d.relation, corpus_sha, CODE_VERSION)
    # bootstrap has no column: a run that differs only there is another run.
    other = replace(d.result, params=replace(d.result.params, bootstrap=d.result.params.bootstrap + 1))
    second = store_discovery(engine, other, d.model, d.relation, corpus_sha, CODE_VERSION)
    assert second != first
    assert find_circuit(engine, d.model, d.relation.name, other.params, corpus_sha, CODE_VERSION) == second
    assert find_circuit(engine, d.model, d.relation.name, d.result.params, corpus_sha, CODE_VERSION) == first
    with Session(engine) as session:
        runs = session.scalars(select(Run).order_by(Run.id)).all()
        assert [run.params_key for run in runs] == [params_key(run.params) for run in runs]
        assert runs[1].params["bootstrap"] == runs[0].params["bootstrap"] + 1


def test_a_method_name_longer_than_sixteen_characters_is_stored(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d = discovered["object_superclass"]
    result = replace(d.result, params=replace(d.result.params, method="eap-ig-activations"))
    circuit_id = store_discovery(engine, result, d.model, d.relation, corpus_sha, CODE_VERSION)
    with Session(engine) as session:
        assert session.scalar(select(Run.method).join(Run.circuit)) == "eap-ig-activations"
    assert circuit_id > 0


def test_migration_keeps_circuits_and_rebuilds_keys(
    empty_url: str, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        fixed = discovered["name_gender"]  # top-n: representable before 0005
        store_discovery(engine, fixed.result, fixed.model, fixed.relation, corpus_sha, CODE_VERSION)
        faithful = discovered["substance_phase"]
        by_faithfulness = replace(faithful.result, params=replace(PARAMS, top_n=None))
        store_discovery(engine, by_faithfulness, faithful.model, faithful.relation, corpus_sha, CODE_VERSION)
        before = count_rows(engine)
        with Session(engine) as session:
            kept_run = session.scalars(select(Run).where(Run.selection == "top_n")).one()
            kept_rows = (kept_run.id, kept_run.circuit.id if kept_run.circuit else None)
        downgrade(empty_url, "0004")
        after_down = count_rows(engine)
        # Only the run sized by faithfulness (and its circuit's rows) went; the other circuit is whole.
        assert after_down["runs"] == before["runs"] - 1
        assert after_down["circuits"] == before["circuits"] - 1
        assert 0 < after_down["circuit_edges"] < before["circuit_edges"]
        upgrade(empty_url)
        after_up = count_rows(engine)
        assert {t: after_up[t] for t in after_down} == after_down
        with Session(engine) as session:
            run = session.get(Run, kept_rows[0])
            assert run is not None and run.circuit is not None and run.circuit.id == kept_rows[1]
            assert run.params["top_n"] == PARAMS.top_n and run.params["bootstrap"] == 0
            assert run.params_key == params_key(run.params)
    finally:
        engine.dispose()
