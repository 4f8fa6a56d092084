"""Analyses through the API, on SQLite and PostgreSQL: GET /analyses (keyset pages, filters), /analyses/{id}
and /relations/{name}/analyses with real results of the tiny Llama; POST /analyses queues one (bearer token,
422 naming the field, 201 then 200 for the same request, 200 with the stored analysis, 503 without a broker).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from api_helpers import MODELS, Catalogue, RecordingSender, auth
from fastapi.testclient import TestClient
from sqlalchemy import select

from atlas.core.hallucination import HallucinationParams, analyze_hallucinations
from atlas.core.icl import ICLParams, icl_analysis
from atlas.core.models import LoadedModel
from atlas.db.analyses import store_analysis
from atlas.db.models import Job
from atlas.db.store import transaction
from atlas.spec.analyses import make_params
from atlas.spec.corpus import Relation

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


def _analysis_jobs(catalogue: Catalogue) -> list[Job]:
    with transaction(catalogue.engine) as session:
        return list(session.scalars(select(Job).where(Job.kind == "analysis").order_by(Job.id)))


def test_posting_an_analysis(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender, relations: dict[str, Relation]
) -> None:
    body = {"kind": "icl", "model": "tiny-llama", "relation": RELATION, "params": {"k": 2, "seed": 77}}
    refused = client.post("/analyses", json=body)
    assert refused.status_code == 401 and sender.sent == [] and _analysis_jobs(catalogue) == []
    first = client.post("/analyses", json=body, headers=auth())
    assert first.status_code == 201, first.text
    job = first.json()["job"]
    assert (job["kind"], job["status"], job["model"]) == ("analysis", "queued", "tiny-llama")
    assert job["request"] == {
        "model": "tiny-llama",
        "relation": RELATION,
        "analysis": "icl",
        "params": asdict(ICLParams(k=2, seed=77)),  # every parameter, defaults filled in
    }
    assert job["analysis_ids"] == [] and first.json()["analysis"] is None
    assert first.headers["location"] == f"/jobs/{job['id']}" and sender.sent == [(job["id"], "cpu")]
    # The same request (a default written out, a name padded): the same job, not sent again.
    same = {**body, "model": " tiny-llama", "params": {**body["params"], "ablation": "mean"}}
    again = client.post("/analyses", json=same, headers=auth())
    assert again.status_code == 200, again.text
    assert again.json()["job"]["id"] == job["id"] and again.json()["created"] is False
    assert sender.sent == [(job["id"], "cpu")] and len(_analysis_jobs(catalogue)) == 1
    assert client.get(f"/jobs/{job['id']}").json()["analysis_ids"] == []

    # An analysis already in the catalogue is returned; nothing is queued.
    params = asdict(make_params("hallucination", {"seed": 5}))
    result = {"model": "toy-a", "relation": "country_language", "n_checked": 3, "n_wrong": 1}
    language = relations["country_language"]
    stored_id = store_analysis(catalogue.engine, "hallucination", MODELS[0], language, params, result)
    request = {"kind": "hallucination", "model": "toy-a", "relation": "country_language"}
    found = client.post("/analyses", json={**request, "params": {"seed": 5}}, headers=auth())
    assert found.status_code == 200, found.text
    assert found.json()["job"] is None and found.json()["analysis"]["id"] == stored_id
    assert found.json()["analysis"]["summary"]["n_wrong"] == 1
    assert sender.sent == [(job["id"], "cpu")] and len(_analysis_jobs(catalogue)) == 1


def test_bad_analysis_requests_name_the_field(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender
) -> None:
    other = catalogue.circuits[("toy-a", "country_language", "eap-ig")]
    before = len(_analysis_jobs(catalogue))
    base = {"kind": "icl", "model": "tiny-llama", "relation": RELATION}
    for change, field in [
        ({"params": {"k": 0}}, "body.params.k"),
        ({"params": {"kk": 2}}, "body.params.kk"),
        ({"params": {"ablation": "corrupt"}}, "body.params.ablation"),
        ({"kind": "hallucination", "params": {"top_n": "many"}}, "body.params.top_n"),
        ({"kind": "lens", "params": {"circuit_id": 0}}, "body.params.circuit_id"),
        ({"kind": "lens", "model": "toy-a", "params": {"circuit_id": other}}, "body.params.circuit_id"),
        ({"kind": "roles"}, "body.kind"),
        ({"queue": "tpu"}, "body.queue"),
        ({"model": ""}, "body.model"),
        ({"colour": "red"}, "body.colour"),
    ]:
        response = client.post("/analyses", json={**base, **change}, headers=auth())
        assert response.status_code == 422, (change, response.text)
        assert response.json()["errors"][0]["field"] == field, (change, response.json())
    lens = {**base, "kind": "lens", "model": "toy-a", "params": {"circuit_id": other}}
    mismatch = client.post("/analyses", json=lens, headers=auth())
    assert f"circuit {other} is of toy-a on country_language" in mismatch.json()["message"]
    for change, message in [
        ({"relation": "nope"}, "unknown relation 'nope'"),
        ({"kind": "lens", "params": {"circuit_id": 424242}}, "no circuit with id 424242"),
    ]:
        response = client.post("/analyses", json={**base, **change}, headers=auth())
        assert response.status_code == 404 and message in response.json()["message"], response.text
    assert sender.sent == [] and len(_analysis_jobs(catalogue)) == before


def test_an_analysis_with_the_broker_down_is_not_left_queued(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender
) -> None:
    sender.fail = True
    body = {"kind": "lens", "model": "tiny-llama", "relation": "name_gender", "params": {"max_facts": 3}}
    response = client.post("/analyses", json=body, headers=auth())
    assert response.status_code == 503 and "broker" in response.json()["message"]
    [job] = [j for j in _analysis_jobs(catalogue) if j.request["relation"] == "name_gender"]
    assert job.status == "failed" and job.error == "could not be queued: ConnectionError"
    sender.fail = False
    retry = client.post("/analyses", json=body, headers=auth())  # the failed one does not hold the request
    assert retry.status_code == 201 and retry.json()["job"]["id"] != job.id
