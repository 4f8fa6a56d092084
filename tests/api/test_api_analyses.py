"""Stored analyses through the API: GET /analyses (keyset pages, filters), /analyses/{id} and
/relations/{name}/analyses, on SQLite and PostgreSQL, with real results of the tiny Llama."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from api_helpers import MODELS, Catalogue
from fastapi.testclient import TestClient

from atlas.core.corpus import Relation
from atlas.core.hallucination import HallucinationParams, analyze_hallucinations
from atlas.core.icl import ICLParams, icl_analysis
from atlas.core.models import LoadedModel
from atlas.db.analyses import store_analysis

RELATION = "country_capital_city"


@pytest.fixture(scope="module")
def results(tiny_llama: LoadedModel, relations: dict[str, Relation]) -> dict[str, tuple[Any, dict[str, Any]]]:
    relation = relations[RELATION]
    hallucination = HallucinationParams(top_n=20, max_facts=2, max_checked=4, batch_size=4, top_k=3)
    icl = ICLParams(k=2, top_n=6, max_facts=2, n_random=1, batch_size=2, known_only=False)
    return {
        "hallucination": (
            hallucination,
            analyze_hallucinations(tiny_llama, relation, hallucination).to_dict(),
        ),
        "icl": (icl, icl_analysis(tiny_llama, relation, icl).to_dict()),
    }


@pytest.fixture(scope="module")
def stored(
    catalogue: Catalogue,
    tiny_llama: LoadedModel,
    relations: dict[str, Relation],
    results: dict[str, tuple[Any, dict[str, Any]]],
) -> dict[str, int]:
    relation = relations[RELATION]
    ids = {
        kind: store_analysis(catalogue.engine, kind, tiny_llama, relation, asdict(p), r, 2.0)
        for kind, (p, r) in results.items()
    }
    # One of a toy model on another relation (the catalogue's own models are torch-free ModelInfos).
    other = {"model": MODELS[0].name, "relation": "city_in_country", "n_facts": 0, "prob_original": None}
    ids["toy"] = store_analysis(
        catalogue.engine, "icl", MODELS[0], relations["city_in_country"], {"k": 3}, other
    )
    return ids


def test_analyses_pages_and_filters(client: TestClient, stored: dict[str, int]) -> None:
    first = client.get("/analyses", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [a["id"] for a in page["items"]] == [stored["hallucination"], stored["icl"]]
    assert page["next"] == stored["icl"] and "result" not in page["items"][0]
    rest = client.get("/analyses", params={"after": page["next"]}).json()
    assert [a["id"] for a in rest["items"]] == [stored["toy"]] and rest["next"] is None
    icl = client.get("/analyses", params={"kind": "icl", "model": "tiny-llama"}).json()["items"]
    assert [a["id"] for a in icl] == [stored["icl"]]
    assert icl[0]["summary"]["n_facts"] == 2 and icl[0]["params"]["k"] == 2
    by_relation = client.get("/analyses", params={"relation": "city_in_country"}).json()["items"]
    assert [(a["model"], a["kind"]) for a in by_relation] == [("toy-a", "icl")]
    assert client.get("/analyses", params={"model": "gpt-17"}).status_code == 404
    assert client.get("/analyses", params={"relation": "nope"}).status_code == 404
    bad = client.get("/analyses", params={"kind": "roles", "limit": 0})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {
        "query.kind",
        "query.limit",
    }


def test_one_analysis_in_full(
    client: TestClient, stored: dict[str, int], results: dict[str, tuple[Any, dict[str, Any]]]
) -> None:
    for kind in ("hallucination", "icl"):
        body = client.get(f"/analyses/{stored[kind]}").json()
        assert body["result"] == json.loads(json.dumps(results[kind][1]))
        assert (body["kind"], body["model"], body["relation"], body["seconds"]) == (
            kind,
            "tiny-llama",
            RELATION,
            2.0,
        )
    missing = client.get("/analyses/999999")
    assert missing.status_code == 404 and missing.json()["message"] == "no analysis with id 999999"
    assert client.get("/analyses/0").status_code == 422


def test_a_relations_analyses(client: TestClient, stored: dict[str, int]) -> None:
    body = client.get(f"/relations/{RELATION}/analyses").json()
    assert body["relation"] == RELATION and body["next"] is None
    assert {a["kind"]: a["id"] for a in body["items"]} == {
        "hallucination": stored["hallucination"],
        "icl": stored["icl"],
    }
    assert all(a["result"] for a in body["items"])
    only = client.get(f"/relations/{RELATION}/analyses", params={"kind": "hallucination"}).json()
    assert [a["kind"] for a in only["items"]] == ["hallucination"]
    assert client.get("/relations/name_gender/analyses").json()["items"] == []
    unknown = client.get("/relations/nope/analyses")
    assert unknown.status_code == 404 and "unknown relation 'nope'" in unknown.json()["message"]
