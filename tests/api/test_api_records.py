"""Circuit records precomputed at write time (atlas.db.records) on both backends: GET /circuits/{id} serves
the stored bytes, and they hold the same JSON as the record built from the catalogue (as the endpoint built
it on every read before); a circuit without a stored record is built on read; large answers are gzipped for
a client that asks."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest
from api_helpers import TOKEN, Catalogue, RecordingSender
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from api.cache import ResponseCache
from atlas.db import records
from atlas.db.browse import circuit_full
from atlas.db.models import Circuit
from atlas.spec.config import Settings
from atlas.spec.json_safe import finite


def built(catalogue: Catalogue, circuit_id: int) -> bytes:
    """The record as the endpoint encoded it before records were stored (json.dumps, NaN as null)."""
    value = finite(circuit_full(catalogue.engine, circuit_id))
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def stored(catalogue: Catalogue, circuit_id: int) -> bytes | None:
    with catalogue.engine.connect() as connection:
        return connection.scalar(select(Circuit.record_json).where(Circuit.id == circuit_id))


@pytest.fixture
def uncached(catalogue: Catalogue, sender: RecordingSender) -> Iterator[TestClient]:
    """A client of an app without the response cache (ATLAS_API_CACHE_MB=0): every answer is read anew."""
    settings = Settings(database_url=catalogue.url, api_token=TOKEN)
    app = create_app(settings, engine=catalogue.engine, sender=sender, cache=ResponseCache(max_bytes=0))
    with TestClient(app) as test_client:
        yield test_client


def test_stored_records_hold_the_built_answer(uncached: TestClient, catalogue: Catalogue) -> None:
    ids = [*catalogue.circuits.values(), catalogue.node_circuit]
    for circuit_id in ids:
        record = stored(catalogue, circuit_id)
        assert record is not None, f"circuit {circuit_id} was stored without its record"
        expected = json.loads(built(catalogue, circuit_id))
        assert json.loads(record) == expected
        response = uncached.get(f"/circuits/{circuit_id}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.content == record  # the stored bytes, as they are
    node = json.loads(stored(catalogue, catalogue.node_circuit) or b"")
    assert node["level"] == "node" and node["reproducibility"]["score_matrix"]["layout"] == "nodes"
    # NaN (the held-out faithfulness of these circuits) is null, as json.dumps(finite(...)) wrote it.
    assert node["evaluations"]["heldout"]["faithfulness"] is None


def test_the_route_reads_the_record_without_building_it(
    uncached: TestClient, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the record was built on read")

    monkeypatch.setattr(records, "circuit_full", refuse)
    circuit_id = catalogue.circuits[("toy-b", "name_gender", "eap-ig")]
    assert uncached.get(f"/circuits/{circuit_id}").content == stored(catalogue, circuit_id)
    missing = uncached.get("/circuits/999999")
    assert missing.status_code == 404 and missing.json()["message"] == "no circuit with id 999999"


def test_a_circuit_without_a_record_is_built_on_read_and_filled(
    uncached: TestClient, catalogue: Catalogue
) -> None:
    circuit_id = catalogue.circuits[("toy-a", "country_language", "eap-ig")]
    original = stored(catalogue, circuit_id)
    with catalogue.engine.begin() as connection:  # as a circuit stored before migration 0009
        connection.execute(update(Circuit).where(Circuit.id == circuit_id).values(record_json=None))
    try:
        expected = json.loads(built(catalogue, circuit_id))
        assert uncached.get(f"/circuits/{circuit_id}").json() == expected
        assert stored(catalogue, circuit_id) is None  # a read does not write
        assert records.fill_missing(catalogue.engine) == 1
        assert records.fill_missing(catalogue.engine) == 0
        assert json.loads(stored(catalogue, circuit_id) or b"") == expected
    finally:
        with catalogue.engine.begin() as connection:
            connection.execute(update(Circuit).where(Circuit.id == circuit_id).values(record_json=original))


def test_large_answers_are_gzipped_on_request(uncached: TestClient, catalogue: Catalogue) -> None:
    circuit_id = catalogue.circuits[("toy-a", "country_capital_city", "eap-ig")]
    record = stored(catalogue, circuit_id)
    assert record is not None and len(record) > 1024
    for path, body in ((f"/circuits/{circuit_id}", record), ("/circuits?limit=20", None)):
        with uncached.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == "gzip"
            assert "accept-encoding" in response.headers["vary"].lower()
        plain = gzip.decompress(raw)
        assert len(raw) < len(plain)
        if body is not None:
            assert plain == body
        else:
            assert json.loads(plain) == uncached.get(path, headers={"Accept-Encoding": "identity"}).json()
    # Not asked for: as it is. A small body: as it is, asked or not.
    identity = {"Accept-Encoding": "identity"}
    with uncached.stream("GET", f"/circuits/{circuit_id}", headers=identity) as response:
        assert "content-encoding" not in response.headers
        assert b"".join(response.iter_raw()) == record
    small = uncached.get("/health", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200 and "content-encoding" not in small.headers


def test_listing_items_are_the_records_summaries(uncached: TestClient, catalogue: Catalogue) -> None:
    """The listing (Core rows) and the stored record show one circuit alike, field for field."""
    page = uncached.get("/circuits", params={"limit": 100}).json()
    assert {item["id"] for item in page["items"]} >= set(catalogue.circuits.values())
    for item in page["items"]:
        record = json.loads(stored(catalogue, item["id"]) or b"")
        assert item == {key: record[key] for key in item}
        assert list(item)[:3] == ["id", "model", "relation"]
