"""Job kinds as a registry (atlas.tasks): each kind's key is stable (jobs recorded before the registry keep
their keys) and equal for equal requests; a request survives the jobs table's JSON; a kind the registry does
not name is refused at submission and fails a job found in the table with its message, as a malformed
request does; an analysis job is validated and deduplicated like the other kinds (SQLite; the worker tests
run one against PostgreSQL and Redis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from sqlalchemy import Engine

from atlas.db import NotCatalogued
from atlas.db.analyses import store_analysis
from atlas.db.engine import make_engine, upgrade
from atlas.db.jobs import InvalidJob, UnknownForJob, get_job, insert_job, list_jobs
from atlas.db.models import Job
from atlas.db.store import ModelInfo, transaction
from atlas.spec.analyses import AnalysisError, ICLParams
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.params import DiscoveryParams
from atlas.tasks.analysis import AnalysisRequest
from atlas.tasks.discover import DiscoveryRequest
from atlas.tasks.edit import EditJobRequest
from atlas.tasks.registry import JOB_KINDS, UnknownJobKind, request_class, request_of
from atlas.tasks.runtime import execute_job
from atlas.tasks.submit import submit_job

RELATION = "country_capital_city"
REQUESTS = {
    "discover": DiscoveryRequest(
        "tiny-llama", (RELATION, "country_language"), DiscoveryParams(method="eap", top_n=20)
    ),
    "edit": EditJobRequest("tiny-llama", RELATION, "France", "Berlin", {"method": "rome", "layer": 1}),
    "analysis": AnalysisRequest("tiny-llama", RELATION, "icl", {"k": 2}),
}
# The same requests written differently (padded names, a repeated relation, an unset or a default value).
EQUAL = {
    "discover": DiscoveryRequest(
        " tiny-llama ", (RELATION, "country_language", RELATION), DiscoveryParams(method="eap", top_n=20)
    ),
    "edit": EditJobRequest(
        " tiny-llama", f"{RELATION} ", " France", "Berlin ", {"layer": 1, "steps": None, "method": "rome"}
    ),
    "analysis": AnalysisRequest(
        "tiny-llama ", f" {RELATION}", "icl", {"k": 2, "method": "eap", "top_n": None}
    ),
}
OTHER = {
    "discover": replace(REQUESTS["discover"], params=DiscoveryParams(method="eap", top_n=21)),
    "edit": replace(REQUESTS["edit"], new_object="Rome"),
    "analysis": replace(REQUESTS["analysis"], analysis="hallucination", params={}),
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    upgrade(url)
    engine = make_engine(url)
    from atlas.db.store import import_relations

    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    yield engine
    engine.dispose()


def test_the_registry_names_each_kind_once() -> None:
    assert JOB_KINDS == ("discover", "edit", "analysis")
    for kind, request in REQUESTS.items():
        assert request_class(kind) is type(request) and request.kind == kind
        assert len(kind) <= Job.__table__.c.kind.type.length  # type: ignore[attr-defined]
    with pytest.raises(
        UnknownJobKind, match="unknown job kind 'mystery': one of discover, edit, analysis"
    ) as e:
        request_class("mystery")
    assert e.value.field == "kind"


def test_keys_are_stable_and_equal_for_equal_requests() -> None:
    # Pinned (the jobs table dedupes active jobs on them). They changed once, on purpose, when faithfulness
    # sizing, signed ranking and the bootstrap came (issue 12) and unset values left the key: a parameter
    # added later, unset, keys as before.
    assert REQUESTS["discover"].key() == "c926a019869dc0fbccb57384d5eee26c6a031f18eb32b569300fec45e1e34fd2"
    older = REQUESTS["discover"].to_dict()
    del older["params"]["confidence"]  # as a job stored before that parameter was added
    assert request_of("discover", older).key() == REQUESTS["discover"].key()
    assert REQUESTS["edit"].key("test") == "23fc7d49d4d7ad7f6e783e667e976d63637a2a4249bf096f1342c35a2684b61f"
    assert REQUESTS["analysis"].key() == "732b54f0095f00ca46a6a9f7704dadd253417d043948a9c4616ad56481fcf57d"
    for kind, request in REQUESTS.items():
        assert request.key() == request.key() == EQUAL[kind].key(), kind
        assert OTHER[kind].key() != request.key(), kind
        stored = json.loads(json.dumps(request.normalized().to_dict()))  # as the jobs table keeps it
        restored = request_of(kind, stored)
        assert restored == request.normalized() and restored.key() == request.key(), kind
    assert len({request.key() for request in REQUESTS.values()}) == len(REQUESTS)


def test_an_unknown_kind_is_refused_at_submission_and_fails_a_stored_job(engine: Engine) -> None:
    class Mystery(DiscoveryRequest):
        kind = "mystery"

    with pytest.raises(UnknownJobKind, match="unknown job kind 'mystery': one of discover, edit, analysis"):
        submit_job(engine, Mystery("tiny-llama", (RELATION,), DiscoveryParams(method="eap")))
    assert list_jobs(engine)[0] == []

    with transaction(engine, write=True) as session:  # rows no submission would make (an older version's)
        unknown = insert_job(session, "mystery", "tiny-llama", {"model": "tiny-llama"}, "a" * 64, "cpu", 1)
        malformed = insert_job(session, "analysis", "tiny-llama", {"model": "tiny-llama"}, "b" * 64, "cpu", 1)
    outcome = execute_job(engine, unknown, "w1")
    assert outcome.status == "failed"
    assert outcome.error == "unknown job kind 'mystery': one of discover, edit, analysis"
    job = get_job(engine, unknown)
    assert (job["status"], job["error"], job["attempts"]) == ("failed", outcome.error, 1)
    bad = execute_job(engine, malformed, "w1")
    assert bad.status == "failed" and bad.error == "malformed analysis job request: KeyError: 'relation'"
    assert get_job(engine, malformed)["error"] == bad.error


def test_analysis_jobs_are_validated_and_deduplicated(engine: Engine) -> None:
    bad = [
        (AnalysisRequest("tiny-llama", RELATION, "roles"), AnalysisError, "kind", "unknown analysis kind"),
        (
            AnalysisRequest("tiny-llama", RELATION, "icl", {"k": 0}),
            AnalysisError,
            "params.k",
            "bad icl parameters: k must be an integer at least 1 and at most 64, got 0",
        ),
        (
            AnalysisRequest("tiny-llama", RELATION, "icl", {"kk": 2}),
            AnalysisError,
            "params.kk",
            "unknown icl",
        ),
        (
            AnalysisRequest("tiny-llama", RELATION, "hallucination", {"top_n": "many"}),
            AnalysisError,
            "params.top_n",
            "top_n must be an integer",
        ),
        (AnalysisRequest(" ", RELATION, "lens"), InvalidJob, "model", "model must be given"),
        (AnalysisRequest("tiny-llama", "nope", "lens"), UnknownForJob, None, "unknown relation 'nope'"),
        (
            AnalysisRequest("tiny-llama", RELATION, "lens", {"circuit_id": 99}),
            NotCatalogued,
            None,
            "no circuit with id 99",
        ),
    ]
    for request, error, field, message in bad:
        with pytest.raises(error, match=message) as raised:
            submit_job(engine, request)
        assert getattr(raised.value, "field", None) == field, request
    with pytest.raises(InvalidJob, match="queue must be one of cpu, gpu") as queue:
        submit_job(engine, REQUESTS["analysis"], "tpu")
    assert queue.value.field == "queue"
    assert list_jobs(engine)[0] == []

    first = submit_job(engine, REQUESTS["analysis"])
    assert first.created and first.job_id is not None and first.found == {"analysis_id": None}
    job = get_job(engine, first.job_id)
    assert job["kind"] == "analysis" and job["request"]["params"] == asdict(ICLParams(k=2))
    assert job["progress"]["relations_total"] == 1 and job["analysis_ids"] == []
    again = submit_job(engine, EQUAL["analysis"])
    assert (again.job_id, again.created) == (first.job_id, False)

    # Stored already: no job, the stored analysis.
    toy = ModelInfo("tiny-llama", "LlamaForCausalLM", 2, 4, 64, "float32", "c" * 64)
    relation = load_corpus(bundled_corpus_path())[RELATION]
    result = {"model": "tiny-llama", "relation": RELATION, "n_facts": 0}
    stored_id = store_analysis(engine, "icl", toy, relation, asdict(ICLParams(k=3)), result)
    found = submit_job(engine, AnalysisRequest("tiny-llama", RELATION, "icl", {"k": 3}))
    assert (found.job_id, found.found, found.text) == (
        None,
        {"analysis_id": stored_id},
        f"analysis {stored_id}",
    )
    assert found.to_dict() == {"job_id": None, "created": False, "analysis_id": stored_id}
    assert len(list_jobs(engine)[0]) == 1
