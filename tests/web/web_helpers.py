"""Helpers of the browser tests (fixtures are in conftest.py): where chromium and the screenshots are, the
served site, the extra catalogue rows the pages show (an edit, a curve, a job), the console-error record."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_helpers import PARAMS, REPO, TOKEN, Catalogue, store_synthetic
from services import CHROMIUM

from atlas.db.store import ModelInfo
from atlas.spec.params import DiscoveryParams

__all__ = ["CHROMIUM", "REPO", "TOKEN", "Catalogue"]

SCREENSHOTS = REPO / "test-output" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    base: str
    catalogue: Catalogue
    edit_id: int
    curve_circuit: int
    job_id: int
    log: Path
    api: httpx.Client = field(repr=False)

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params or None)  # {} would drop a query in `path`
        assert response.status_code == 200, response.text
        return response.json()


def add_extras(catalogue: Catalogue) -> tuple[int, int, int]:
    """A knowledge edit (its diff from two of toy-a's circuits), a stored faithfulness curve and a queued
    job: what the edit page, the curve plot and the jobs page show."""
    from sqlalchemy import insert, select, update

    from atlas.db import records
    from atlas.db.models import Component, Edit, EditComponent, Evaluation, Model, Relation
    from atlas.db.queries import circuit_detail
    from atlas.db.store import transaction
    from atlas.tasks.discover import DiscoveryRequest
    from atlas.tasks.submit import submit_job

    engine = catalogue.engine
    first = catalogue.circuits[("toy-a", "country_capital_city", "eap-ig")]
    second = catalogue.circuits[("toy-a", "country_language", "eap-ig")]
    before, after = circuit_detail(engine, first), circuit_detail(engine, second)
    nodes_before = {n["node"] for n in before["nodes"]} - {"input", "logits"}
    nodes_after = {n["node"] for n in after["nodes"]} - {"input", "logits"}
    scores_before = {e["edge"]: e["score"] for e in before["edges"]}
    scores_after = {e["edge"]: e["score"] for e in after["edges"]}
    kept = sorted(scores_before.keys() & scores_after.keys())
    diff = {
        "nodes_gained": sorted(nodes_after - nodes_before),
        "nodes_lost": sorted(nodes_before - nodes_after),
        "nodes_kept": sorted(nodes_before & nodes_after),
        "edges_gained": sorted(scores_after.keys() - scores_before.keys()),
        "edges_lost": sorted(scores_before.keys() - scores_after.keys()),
        "n_edges_kept": len(kept),
        "rescored": [
            {
                "edge": e,
                "before": scores_before[e],
                "after": scores_after[e],
                "delta": scores_after[e] - scores_before[e],
            }
            for e in kept
        ],
        "node_jaccard": len(nodes_before & nodes_after) / len(nodes_before | nodes_after),
        "edge_jaccard": len(kept) / len(scores_before.keys() | scores_after.keys()),
    }
    with transaction(engine, write=True) as session:
        model_id = session.scalar(select(Model.id).where(Model.name == "toy-a"))
        relation_id = session.scalar(select(Relation.id).where(Relation.name == "country_capital_city"))
        edit = Edit(
            model_id=model_id,
            relation_id=relation_id,
            subject="France",
            prompt="The capital of France is",
            old_object="Paris",
            new_object="Rome",
            method="ft-m",
            layer=1,
            params={"steps": 10, "lr": 0.5},
            request_key="e" * 64,
            edited_sha256="f" * 64,
            outcome={"efficacy": 1.0, "generalization": 0.75, "locality": 0.9},
            update={"norm": 1.25},
            diff=diff,
            code_version="test",
        )
        session.add(edit)
        session.flush()
        components = dict(
            session.execute(select(Component.name, Component.id).where(Component.model_id == model_id))
            .tuples()
            .all()
        )
        rows = [
            {
                "edit_id": edit.id,
                "component_id": components[name],
                "change": change,
                "score_before": 0.5,
                "score_after": 0.25,
            }
            for change, names in (
                ("gained", diff["nodes_gained"]),
                ("lost", diff["nodes_lost"]),
                ("kept", diff["nodes_kept"]),
            )
            for name in names
        ]
        if rows:
            session.execute(insert(EditComponent), rows)
        edit_id = edit.id
        curve = [
            {"percent": p, "n_edges": p, "faithfulness": min(1.0, p / 40)} for p in (1, 2, 5, 10, 20, 50, 100)
        ]
        session.execute(
            update(Evaluation)
            .where(Evaluation.circuit_id == first, Evaluation.split == "discovery")
            .values(curve=curve, curve_area=0.8)
        )
        records.write(session, [first])  # the API serves the record stored with the circuit
    params = DiscoveryParams(method="eap", top_n=30, max_facts=4, known_only=False, curve=False)
    job = submit_job(engine, DiscoveryRequest("toy-b", ("city_in_country",), params))
    assert job.job_id is not None
    return edit_id, first, job.job_id


PLANTED_MODEL = ModelInfo("toy-planted", "LlamaForCausalLM", 8, 8, 64, "float32", "c" * 64)
PLANTED_HEAD = "a7.h7"


def add_planted(catalogue: Catalogue) -> None:
    """toy-planted (8 x 8): a circuit per bundled relation (controls included) whose top edges run through
    one planted head, the rest seeded noise: a model with a component that recurs significantly."""
    from atlas.spec.corpus import bundled_corpus_path, load_corpus

    for k, name in enumerate(sorted(load_corpus(bundled_corpus_path()))):
        store_synthetic(catalogue.engine, PLANTED_MODEL, name, PARAMS, 500 + k, planted=PLANTED_HEAD)


class Console:
    """The page's console errors and uncaught exceptions; `allow` takes substrings of expected ones."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def allow(self, text: str) -> None:
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]
