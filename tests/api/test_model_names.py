"""POST /jobs and POST /edits refuse a model that is neither catalogued nor loadable here before anything
is stored or queued (422 naming the model and the ones that would do), without waiting on the network when
HF_HUB_OFFLINE is set (as here); catalogued and built-in models are accepted. On SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from api_helpers import Catalogue, RecordingSender, auth
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from atlas.db.models import Job, Relation

FACTS = {
    "relation": "made_up_things",
    "template": "The colour of {} is",
    "facts": [{"subject": "grass", "object": "green"}, {"subject": "sky", "object": "blue"}],
}


def _counts(catalogue: Catalogue) -> tuple[int, int]:
    with catalogue.engine.connect() as connection:
        return (
            int(connection.execute(select(func.count(Job.id))).scalar_one()),
            int(connection.execute(select(func.count(Relation.id))).scalar_one()),
        )


@pytest.mark.parametrize("model", ["no-such-model-xyz", "some-org/no-such-model", "gpt-17 large", "../etc"])
def test_a_job_for_a_model_that_cannot_be_had_is_422_and_nothing_is_queued(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender, model: str
) -> None:
    before, sent = _counts(catalogue), list(sender.sent)
    started = time.monotonic()
    response = client.post(
        "/jobs", json={"model": model, "relations": ["country_language"], "facts": FACTS}, headers=auth()
    )
    assert time.monotonic() - started < 3  # offline: no network wait
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["errors"][0]["field"] == "body.model"
    assert (
        repr(model) in answer["message"]
        and "toy-a" in answer["message"]
        and "tiny-llama" in answer["message"]
    )
    assert _counts(catalogue) == before and sender.sent == sent  # the fact list was not stored either


def test_an_edit_for_a_model_that_cannot_be_had_is_422(client: TestClient, sender: RecordingSender) -> None:
    sent = list(sender.sent)
    edit = {"model": "nope-7b", "relation": "country_capital_city", "subject": "France", "new_object": "Rome"}
    response = client.post("/edits", json={**edit, "layer": 1}, headers=auth())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "body.model" and "'nope-7b'" in response.json()["message"]
    assert sender.sent == sent


@pytest.mark.parametrize("model", ["toy-b", "tiny-gpt2"])
def test_catalogued_and_built_in_models_are_accepted(client: TestClient, model: str) -> None:
    response = client.post(
        "/jobs", json={"model": model, "relations": ["adjective_antonym"], "seed": 31}, headers=auth()
    )
    assert response.status_code in (200, 201), response.text
