"""Knowledge edits in the catalogue, on SQLite and PostgreSQL, with real ROME edits of the tiny Llama (it
knows no facts, so efficacy may be anything: these tests check storage): an edit job run inline stores one
edit with its components and leaves the cached model untouched; the same edit again is found, not redone;
bad input fails with a clear message before any model copy and stores nothing; the read-side queries; jobs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sqlalchemy import Engine

from atlas.core.editing import EDITORS, EditError, EditParams
from atlas.db.edits import (
    EDIT_METHODS,
    EDIT_PARAM_NAMES,
    edit_comparison,
    edit_component_changes,
    get_edit,
    list_edits,
)
from atlas.db.jobs import JobError, get_job
from atlas.db.store import count_rows, import_relations
from atlas.edit_jobs import run_edit
from atlas.jobs import cached_model
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.tasks.edit import EditJobRequest
from atlas.tasks.submit import submit_job

RELATION = "country_capital_city"
QUICK = {"method": "rome", "layer": 1, "steps": 3, "n_prefixes": 2, "cov_tokens": 256}
REQUEST = EditJobRequest("tiny-llama", RELATION, "France", "Berlin", QUICK, n_neighbours=2)


@pytest.fixture
def catalogue(engine: Engine) -> Engine:
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    return engine


def _logits() -> torch.Tensor:
    model = cached_model("tiny-llama")
    with torch.no_grad():
        return model.bridge(torch.tensor([model.encode("The capital of France is")]))


def test_restated_names_match_the_editing_package() -> None:
    assert set(EDIT_METHODS) == set(EDITORS)
    assert set(EDIT_PARAM_NAMES) == {f.name for f in dataclasses.fields(EditParams)}


def test_an_edit_job_stores_one_edit_once_and_leaves_the_cached_model_alone(catalogue: Engine) -> None:
    before = _logits()
    stored = run_edit(catalogue, REQUEST)
    assert not stored.reused
    assert torch.equal(_logits(), before)  # the edit ran on a copy
    again = run_edit(catalogue, REQUEST)
    assert again.reused and again.edit_id == stored.edit_id
    assert count_rows(catalogue)["edits"] == 1

    edit = get_edit(catalogue, stored.edit_id)
    assert (edit["subject"], edit["old_object"], edit["new_object"]) == ("France", "Paris", "Berlin")
    assert "France" in edit["prompt"] and edit["method"] == "rome" and edit["layer"] == 1
    assert edit["params"]["steps"] == 3 and edit["params"]["discovery"]["method"] == "eap"
    assert {"efficacy", "locality", "new", "old"} <= set(edit["outcome"])
    assert len(edit["lens"]) == edit["n_layers"] * (edit["n_heads"] + 1)
    diff = edit["diff"]  # the edited fact's CircuitDiff.to_dict(), plus the neighbours'
    assert {"nodes_gained", "nodes_lost", "nodes_kept", "edges_gained", "node_jaccard", "neighbours"} <= set(
        diff
    )
    assert all({"subject", "object", "node_jaccard"} <= set(n) for n in diff["neighbours"])
    components = edit["components"]
    assert components and {c["change"] for c in components} <= {"gained", "lost", "kept"}
    heads_and_mlps = set(diff["nodes_gained"] + diff["nodes_lost"] + diff["nodes_kept"]) - {"input", "logits"}
    assert {c["component"] for c in components} == heads_and_mlps
    assert edit["update"]["edited_sha256"] == edit["edited_sha256"] != edit["update"]["original_sha256"]

    page = list_edits(catalogue, model="tiny-llama", method="rome", layer=1)
    assert [e["id"] for e in page["items"]] == [stored.edit_id] and page["next"] is None
    assert list_edits(catalogue, method="ft-m")["items"] == []
    changes = edit_component_changes(catalogue, "tiny-llama", "rome", 1)
    assert sum(r["n_edits"] for r in changes) == len(components)
    assert edit_component_changes(catalogue, "tiny-llama", "rome", 2) == []
    [group] = edit_comparison(catalogue, "tiny-llama")
    assert (group["method"], group["layer"], group["n_edits"]) == ("rome", 1, 1)

    # Submitting the stored edit queues nothing: the edit is returned.
    submission = submit_job(catalogue, REQUEST)
    assert (submission.job_id, submission.found["edit_id"]) == (None, stored.edit_id)


BAD = [
    (
        {"subject": "Narnia"},
        JobError,
        "subject 'Narnia' is not in relation 'country_capital_city'; its subjects: France",
    ),
    ({"new_object": "  "}, JobError, "the new object is empty"),
    ({"edit": {**QUICK, "layer": 99}}, EditError, "layer 99 is outside model 'tiny-llama'"),
    ({"new_object": "Paris"}, JobError, "equals the old object"),
    ({"edit": {**QUICK, "method": "nope"}}, JobError, "unknown edit method 'nope'; choose from rome, ft-m"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_edits_fail_clearly_and_store_nothing(
    catalogue: Engine, change: dict[str, object], error: type[Exception], message: str
) -> None:
    request = dataclasses.replace(REQUEST, **change)  # type: ignore[arg-type]
    with pytest.raises(error, match=message.replace("(", r"\(")):
        run_edit(catalogue, request)
    if error is JobError:  # checked without the model: the queue refuses it too
        with pytest.raises(JobError, match=message):
            submit_job(catalogue, request)
    rows = count_rows(catalogue)
    assert rows["edits"] == rows["edit_components"] == rows["jobs"] == 0


def test_edit_jobs_are_submitted_once(catalogue: Engine) -> None:
    first = submit_job(catalogue, REQUEST, "cpu")
    assert first.created and first.job_id is not None and first.found["edit_id"] is None
    job = get_job(catalogue, first.job_id)
    assert job["kind"] == "edit" and job["request"]["subject"] == "France"
    assert EditJobRequest.from_dict(job["request"]).key() == REQUEST.key()
    second = submit_job(catalogue, REQUEST, "cpu")
    assert (second.job_id, second.created) == (first.job_id, False)
    with pytest.raises(JobError, match="unknown relation 'nope'"):
        submit_job(catalogue, dataclasses.replace(REQUEST, relation="nope"))
    with pytest.raises(JobError, match="queue must be one of"):
        submit_job(catalogue, dataclasses.replace(REQUEST, subject="Spain"), "tpu")
