"""Write endpoints on both backends: the bearer token, scheduling (new, identical active job, finished runs),
fact lists, cancelling, a broker that is down, and validation."""

from __future__ import annotations

from typing import Any

from api_helpers import PARAMS, RELATIONS, TOKEN, Catalogue, RecordingSender, auth, make_client
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from atlas.db.models import Job, Relation
from atlas.db.store import transaction


def _jobs(catalogue: Catalogue) -> int:
    with transaction(catalogue.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def request(relations: list[str], **extra: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "relations": relations, "method": "eap", "max_facts": 3, **extra}


def test_writes_need_the_token(client: TestClient, catalogue: Catalogue, sender: RecordingSender) -> None:
    before = _jobs(catalogue)
    body = request(["country_language"], seed=101)
    for headers in ({}, auth("wrong-token"), {"Authorization": f"Basic {TOKEN}"}, auth(TOKEN + "x")):
        response = client.post("/jobs", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text and "message" in response.json()
    assert client.post("/jobs/1/cancel").status_code == 401
    assert _jobs(catalogue) == before and sender.sent == []


def test_a_server_without_a_token_accepts_no_writes(catalogue: Catalogue, sender: RecordingSender) -> None:
    with make_client(catalogue, sender, token="") as client:
        response = client.post("/jobs", json=request(["country_language"]), headers=auth(""))
        assert response.status_code == 403 and "ATLAS_API_TOKEN" in response.json()["message"]
        response = client.post("/jobs", json=request(["country_language"]), headers=auth("anything"))
        assert response.status_code == 403
    assert sender.sent == []


def test_schedule_find_the_same_job_then_cancel(client: TestClient, sender: RecordingSender) -> None:
    body = request(["country_language", "name_gender"], seed=7)
    created = client.post("/jobs", json=body, headers=auth())
    assert created.status_code == 201, created.text
    job = created.json()["job"]
    assert created.json()["created"] is True and created.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"]["relations_total"] == 2
    assert sender.sent == [(job["id"], "cpu")]
    again = client.post("/jobs", json=body, headers=auth())
    assert again.status_code == 200 and again.json()["job"]["id"] == job["id"]
    assert again.json()["created"] is False and len(sender.sent) == 1
    status = client.get(f"/jobs/{job['id']}").json()
    assert status["request"]["relations"] == ["country_language", "name_gender"]
    assert status["request"]["params"]["seed"] == 7 and status["request"]["params"]["method"] == "eap"
    listed = client.get("/jobs", params={"status": "queued"}).json()["items"]
    assert job["id"] in [j["id"] for j in listed]
    cancelled = client.post(f"/jobs/{job['id']}/cancel", headers=auth())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    twice = client.post(f"/jobs/{job['id']}/cancel", headers=auth())
    assert twice.status_code == 409 and "only a queued job" in twice.json()["message"]
    assert client.post("/jobs/999999/cancel", headers=auth()).status_code == 404
    assert client.get("/jobs/999999").status_code == 404


def test_a_job_that_duplicates_finished_runs_returns_them(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender
) -> None:
    body = {
        "model": "toy-a",
        "relations": list(RELATIONS[:2]),
        "method": PARAMS.method,
        "ig_steps": PARAMS.ig_steps,
        "top_n": PARAMS.top_n,
        "max_facts": PARAMS.max_facts,
        "known_only": PARAMS.known_only,
        "curve": PARAMS.curve,
    }
    before = _jobs(catalogue)
    response = client.post("/jobs", json=body, headers=auth())
    assert response.status_code == 200, response.text
    result = response.json()
    expected = {r: catalogue.circuits[("toy-a", r, "eap-ig")] for r in RELATIONS[:2]}
    assert result["job"] is None and result["created"] is False
    assert result["existing_circuits"] == expected
    assert sorted(c["id"] for c in result["circuits"]) == sorted(expected.values())
    assert _jobs(catalogue) == before and sender.sent == []
    # One run missing: a job for the rest, with the stored one reported.
    partial = client.post(
        "/jobs", json=body | {"relations": [*RELATIONS[:2], "verb_past_tense"]}, headers=auth()
    )
    assert partial.status_code == 201 and partial.json()["existing_circuits"] == expected


def test_a_fact_list_becomes_a_relation(client: TestClient, catalogue: Catalogue) -> None:
    facts = {
        "relation": "api_river_country",
        "template": "The {} flows through the country of",
        "category": "factual",
        "facts": [
            {"subject": "Danube", "object": "Austria"},
            {"subject": "Loire", "object": "France"},
            {"subject": "Po", "object": "Italy"},
        ],
    }
    response = client.post("/jobs", json={"model": "tiny-llama", "facts": facts}, headers=auth())
    assert response.status_code == 201, response.text
    assert response.json()["job"]["request"]["relations"] == ["api_river_country"]
    relation = client.get("/relations/api_river_country").json()
    assert relation["n_facts"] == 3 and relation["prompt_templates_zs"] == [facts["template"]]
    other = facts | {"facts": facts["facts"][:2]}
    conflict = client.post("/jobs", json={"model": "tiny-llama", "facts": other, "seed": 3}, headers=auth())
    assert conflict.status_code == 409 and "other content" in conflict.json()["message"]
    no_slot = facts | {"template": "no slot here"}
    bad = client.post("/jobs", json={"model": "tiny-llama", "facts": no_slot}, headers=auth())
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.facts.template"
    with transaction(catalogue.engine) as session:
        assert session.scalar(select(func.count()).where(Relation.name == "api_river_country")) == 1


def test_bad_requests_name_the_field(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender
) -> None:
    before = _jobs(catalogue)
    cases = [
        (request(["country_language"], method="magic"), "body.method"),
        (request(["country_language"], ig_steps=0), "body.ig_steps"),
        (request(["country_language"], top_n=10, threshold=0.1), "body"),
        (request(["country_language"], colour="red"), "body.colour"),
        (request(["country_language"], queue="tpu"), "body.queue"),
        ({"relations": ["country_language"]}, "body.model"),
        ({"model": "tiny-llama"}, "body"),
    ]
    for body, field in cases:
        response = client.post("/jobs", json=body, headers=auth())
        assert response.status_code == 422, (body, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], response.json()
    unknown = client.post("/jobs", json=request(["no_such_relation"]), headers=auth())
    assert unknown.status_code == 404 and "unknown relation 'no_such_relation'" in unknown.json()["message"]
    not_json = client.post("/jobs", content=b"{", headers=auth() | {"content-type": "application/json"})
    assert not_json.status_code == 422
    assert _jobs(catalogue) == before and sender.sent == []


def test_a_broker_that_is_down_leaves_no_queued_job(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender
) -> None:
    sender.fail = True
    body = request(["adjective_antonym"], seed=55)
    response = client.post("/jobs", json=body, headers=auth())
    assert response.status_code == 503 and "broker" in response.json()["message"]
    with transaction(catalogue.engine) as session:
        job = session.scalars(select(Job).order_by(Job.id.desc()).limit(1)).one()
        assert job.status == "failed" and "could not be queued" in (job.error or "")
    sender.fail = False
    retry = client.post("/jobs", json=body, headers=auth())  # the failed one is not "active": queued anew
    assert retry.status_code == 201 and retry.json()["job"]["id"] != job.id
