"""Circuit records (atlas.db.records) written by the store with real discovery results, on both backends: in
the circuit's transaction (a failure while writing it stores nothing), equal in JSON to the record built from
the catalogue afterwards (what GET /circuits/{id} answered before records were stored), rewritten when the
relation's content hash changes, and filled for circuits stored without one."""

from __future__ import annotations

import json

import pytest
from db_helpers import CODE_VERSION, Discovered
from sqlalchemy import Engine, select, update

from atlas.db import records
from atlas.db.browse import circuit_full
from atlas.db.models import Circuit
from atlas.db.store import add_facts, count_rows, store_discovery
from atlas.spec.corpus import Fact as CorpusFact
from atlas.spec.json_safe import finite


def _stored(engine: Engine, circuit_id: int) -> bytes | None:
    with engine.connect() as connection:
        return connection.scalar(select(Circuit.record_json).where(Circuit.id == circuit_id))


def _built(engine: Engine, circuit_id: int) -> object:
    """The record as the API built and encoded it on every read before (json.dumps, NaN as null)."""
    return json.loads(json.dumps(finite(circuit_full(engine, circuit_id)), allow_nan=False))


def _store(engine: Engine, d: Discovered, corpus_sha: str) -> int:
    return store_discovery(engine, d.result, d.model, d.relation, corpus_sha, CODE_VERSION)


def test_the_store_writes_the_record(
    engine: Engine, discovered: dict[str, Discovered], node_discovered: Discovered, corpus_sha: str
) -> None:
    ids = [_store(engine, d, corpus_sha) for d in (*discovered.values(), node_discovered)]
    for circuit_id in ids:
        record = _stored(engine, circuit_id)
        assert record is not None
        value = json.loads(record)
        assert value == _built(engine, circuit_id)
        assert value["id"] == circuit_id and value["edges"] and value["evaluations"]["discovery"]
        assert records.read(engine, circuit_id) == record
    # Storing the same run again writes nothing, the record included.
    first = _stored(engine, ids[0])
    assert _store(engine, discovered["name_gender"], corpus_sha) == ids[0]
    assert _stored(engine, ids[0]) == first


def test_a_failing_record_stores_nothing(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> bytes:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(records, "build", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        _store(engine, discovered["name_gender"], corpus_sha)
    assert all(count == 0 for count in count_rows(engine).values())


def test_new_facts_rewrite_the_records_of_the_relation(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    d, other = discovered["name_gender"], next(v for k, v in discovered.items() if k != "name_gender")
    circuit_id, untouched = _store(engine, d, corpus_sha), _store(engine, other, corpus_sha)
    before = json.loads(_stored(engine, circuit_id) or b"")
    untouched_before = _stored(engine, untouched)
    assert add_facts(engine, d.relation.name, [CorpusFact("Zebulon", "male")]) == 1
    after = json.loads(_stored(engine, circuit_id) or b"")
    new_hash = after["reproducibility"]["relation"]["content_sha256"]
    assert new_hash != before["reproducibility"]["relation"]["content_sha256"]
    assert after == _built(engine, circuit_id)
    assert _stored(engine, untouched) == untouched_before  # another relation's circuit


def test_fill_missing(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> None:
    ids = [_store(engine, d, corpus_sha) for d in discovered.values()]
    with engine.begin() as connection:  # as circuits stored before migration 0009
        connection.execute(update(Circuit).where(Circuit.id.in_(ids[1:])).values(record_json=None))
    assert json.loads(records.read(engine, ids[1])) == _built(engine, ids[1])  # built on read
    assert _stored(engine, ids[1]) is None
    assert records.fill_missing(engine, limit=1) == 1
    assert records.fill_missing(engine) == len(ids) - 2
    assert records.fill_missing(engine) == 0
    for circuit_id in ids:
        assert json.loads(_stored(engine, circuit_id) or b"") == _built(engine, circuit_id)
