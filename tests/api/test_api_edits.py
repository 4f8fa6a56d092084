"""The edit endpoints on both backends: a stored edit (hand-made, stored as atlas.edit_jobs stores one) is
listed, shown whole and counted per component; POST /edits needs the token, queues a job (201), finds the
same job (200) or the stored edit (200), names the field of bad input (422) or the unknown relation (404)."""

from __future__ import annotations

from api_helpers import Catalogue, RecordingSender, auth
from fastapi.testclient import TestClient

from atlas.db.edits import ComponentChange, EditRecord, EditSpec, store_edit
from atlas.db.store import ModelInfo

TOY_A = ModelInfo("toy-a", "LlamaForCausalLM", 2, 4, 64, "float32", "a" * 64)
DIFF = {
    "nodes_gained": ["a1.h2"],
    "nodes_lost": ["a0.h1"],
    "nodes_kept": ["input", "m0", "logits"],
    "edges_gained": ["input->a1.h2<q>"],
    "edges_lost": ["input->a0.h1<v>"],
    "n_edges_kept": 1,
    "rescored": [{"edge": "m0->logits", "before": 0.5, "after": 0.25, "delta": -0.25}],
    "node_jaccard": 0.6,
    "edge_jaccard": 1 / 3,
    "neighbours": [],
}


def _stored_edit(catalogue: Catalogue, subject: str = "Spain", new_object: str = "Rome") -> tuple[int, dict]:
    edit = {"method": "rome", "layer": 1}
    request = EditSpec("toy-a", "country_capital_city", subject, new_object, edit).normalized()
    record = EditRecord(
        request=request,
        key=request.key(),
        model=TOY_A,
        prompt=f"The capital of {subject} is",
        old_object="Madrid",
        params={**edit, "steps": 20},
        edited_sha256="f" * 64,
        outcome={"efficacy": True, "efficacy_prob": True, "generalization": 0.5, "locality": 0.9},
        update={"delta_norm": 1.0},
        lens=[{"name": "m1", "layer": 1, "kind": "mlp", "rank": 1, "prob": 0.5}],
        diff=DIFF,
        seconds={"edit": 1.0},
        components=[
            ComponentChange("a1.h2", "gained", 0.0, 0.5),
            ComponentChange("a0.h1", "lost", 0.5, None),
            ComponentChange("m0", "kept", 1.0, 0.75),
        ],
        code_version="test",
    )
    edit_id, _ = store_edit(catalogue.engine, record)
    return edit_id, {
        "model": "toy-a",
        "relation": "country_capital_city",
        "subject": subject,
        "new_object": new_object,
    }


def test_edits_are_listed_shown_and_counted(client: TestClient, catalogue: Catalogue) -> None:
    edit_id, _ = _stored_edit(catalogue)
    page = client.get("/edits", params={"model": "toy-a", "method": "rome", "layer": 1}).json()
    assert edit_id in [e["id"] for e in page["items"]]
    assert client.get("/edits", params={"model": "nope"}).status_code == 404
    assert client.get("/edits", params={"method": "memit"}).status_code == 422
    shown = client.get(f"/edits/{edit_id}").json()
    assert shown["diff"]["nodes_gained"] == ["a1.h2"] and shown["lens"][0]["name"] == "m1"
    assert {c["component"]: c["change"] for c in shown["components"]} == {
        "a0.h1": "lost",
        "m0": "kept",
        "a1.h2": "gained",
    }
    assert client.get("/edits/424242").status_code == 404
    rows = client.get("/edits/components", params={"model": "toy-a", "method": "rome", "layer": 1}).json()
    assert rows[0]["component"] == "a1.h2" and rows[0]["gained"] >= 1
    summary = client.get("/edits/summary", params={"model": "toy-a"}).json()
    assert summary[0]["n_edits"] >= 1 and summary[0]["method"] == "rome"


def test_posting_an_edit(client: TestClient, catalogue: Catalogue, sender: RecordingSender) -> None:
    body = {"model": "toy-a", "relation": "country_capital_city", "subject": "Italy", "new_object": "Oslo"}
    body = {**body, "layer": 1}
    assert client.post("/edits", json=body).status_code == 401
    first = client.post("/edits", json=body, headers=auth())
    assert first.status_code == 201, first.json()
    job = first.json()["job"]
    assert job["kind"] == "edit" and (job["id"], "cpu") in sender.sent
    again = client.post("/edits", json=body, headers=auth())
    assert again.status_code == 200 and again.json()["job"]["id"] == job["id"]

    edit_id, stored = _stored_edit(catalogue, "Portugal", "Paris")
    found = client.post("/edits", json={**stored, "layer": 1}, headers=auth())
    assert found.status_code == 200 and found.json()["edit"]["id"] == edit_id and found.json()["job"] is None


def test_bad_edit_requests_name_the_field(client: TestClient) -> None:
    base = {"model": "toy-a", "relation": "country_capital_city", "subject": "France", "new_object": "Oslo"}
    base = {**base, "layer": 1}
    for change, field in [
        ({"subject": "Narnia"}, "body.subject"),
        ({"new_object": " "}, "body.new_object"),
        ({"new_object": "Paris"}, "body.new_object"),
        ({"layer": 5}, "body.layer"),  # toy-a has 2 layers
        ({"method": "nope"}, "body.method"),
        ({"steps": 0}, "body.steps"),
    ]:
        response = client.post("/edits", json={**base, **change}, headers=auth())
        assert response.status_code == 422, (change, response.json())
        assert response.json()["errors"][0]["field"] == field, response.json()
    unknown = client.post("/edits", json={**base, "relation": "nope"}, headers=auth())
    assert unknown.status_code == 404 and "unknown relation 'nope'" in unknown.json()["message"]
