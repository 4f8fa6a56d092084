"""A circuit sized by faithfulness, stored by the real store from a real discovery on a tiny model: the API's
listing and circuit record carry what the search found (target, target met, size, held-out and random
faithfulness, top-1) and the bootstrap; POST /jobs takes the same rule and validation; methods come from the
registry."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from api_helpers import Catalogue, RecordingSender, auth, make_client
from fastapi.testclient import TestClient

from atlas.core.discover import DiscoveryParams, DiscoveryResult, discover
from atlas.core.models import load_model
from atlas.db.engine import make_engine, upgrade
from atlas.db.store import import_relations, store_discovery
from atlas.spec.corpus import bundled_corpus_path, corpus_hash, load_corpus

PARAMS = DiscoveryParams(ig_steps=2, max_facts=4, known_only=False, max_edges=60, bootstrap=6, curve=False)


@pytest.fixture(scope="module")
def stored(db_url: str) -> Iterator[tuple[Catalogue, int, DiscoveryResult]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    model = load_model("tiny-llama", device="cpu")
    corpus = load_corpus(bundled_corpus_path())
    relation = corpus["country_capital_city"]
    import_relations(engine, [relation])
    result = discover(model, relation, PARAMS)
    circuit_id = store_discovery(engine, result, model, relation, corpus_hash([relation]), "test")
    try:
        yield Catalogue(db_url, engine), circuit_id, result
    finally:
        engine.dispose()


@pytest.fixture
def client(stored: tuple[Catalogue, int, DiscoveryResult]) -> Iterator[TestClient]:
    with make_client(stored[0], RecordingSender()) as test_client:
        yield test_client


def _close(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and a == pytest.approx(b, abs=1e-9))


def test_listing_and_record_carry_the_search(
    client: TestClient, stored: tuple[Catalogue, int, DiscoveryResult]
) -> None:
    _, circuit_id, result = stored
    assert result.size is not None and result.heldout is not None
    row = next(c for c in client.get("/circuits").json()["items"] if c["id"] == circuit_id)
    assert row["selection"] == "faithfulness" and row["target_faithfulness"] == 0.8
    assert row["target_met"] == result.size.target_met
    assert row["n_edges"] == result.circuit.n_edges == result.size.size
    assert _close(row["faithfulness"], result.discovery.faithfulness)
    assert _close(row["faithfulness_heldout"], result.heldout.faithfulness)
    assert _close(row["faithfulness_random_heldout"], result.heldout.faithfulness_random)
    assert _close(row["top1_circuit_heldout"], result.heldout.top1_circuit)
    record = client.get(f"/circuits/{circuit_id}").json()
    assert record["search"]["n_top"] == result.size.n_top and record["search"]["cap"] == 60

    def served(value: float) -> object:  # NaN (not evaluated in sample) is served as null
        return None if math.isnan(value) else pytest.approx(value)

    assert [tuple(t) for t in record["search"]["trace"]] == [
        (n, size, served(f), served(b)) for n, size, f, b in result.size.trace
    ]
    assert record["run"]["params"] == PARAMS.canonical("edge")
    held = record["evaluations"]["heldout"]
    assert held["hit_at_10_informative"] == (result.heldout.hit_random < 0.5)
    assert held["top1"]["original"] == pytest.approx(result.heldout.top1_original)
    assert record["stability"]["resamples"] == 6


def test_post_jobs_takes_the_faithfulness_rule_and_refuses_mixed_rules(client: TestClient) -> None:
    body = {"model": "tiny-llama", "relations": ["country_capital_city"], "target_faithfulness": 0.9}
    answer = client.post("/jobs", json=body, headers=auth())
    assert answer.status_code in (200, 201), answer.text
    mixed = client.post("/jobs", json={**body, "top_n": 30}, headers=auth())
    assert mixed.status_code == 422 and "give one or the other" in mixed.json()["message"]
    for field, value in (
        ("target_faithfulness", 1.5),
        ("max_edges", 0),
        ("bootstrap", -1),
        ("method", "acdc"),
    ):
        bad = client.post("/jobs", json={**body, field: value}, headers=auth())
        assert bad.status_code == 422, (field, bad.text)
        assert any(field in error["field"] for error in bad.json()["errors"]), bad.json()


def test_methods_come_from_the_registry(client: TestClient) -> None:
    from atlas.spec.methods import DEFAULT_METHOD, METHOD_NAMES

    listed = client.get("/methods").json()
    assert listed[0]["name"] == DEFAULT_METHOD
    assert sorted(m["name"] for m in listed) == sorted(METHOD_NAMES)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["JobRequest"]["properties"]["method"]
    assert sorted(schema["enum"]) == sorted(METHOD_NAMES)
