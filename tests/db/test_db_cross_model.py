"""Components matched across models by kind and relative depth."""

from __future__ import annotations

import pytest
from db_helpers import CODE_VERSION, PARAMS, with_circuit
from sqlalchemy import Engine, select

from atlas.core.discover import discover
from atlas.core.models import LoadedModel, load_model
from atlas.db.cross_model import components_across_models
from atlas.db.store import store_discovery
from atlas.spec.corpus import Relation


def _store(engine: Engine, model: LoadedModel, relation: Relation, edges: list[str], sha: str) -> None:
    result = with_circuit(discover(model, relation, PARAMS), edges)
    store_discovery(engine, result, model, relation, sha, CODE_VERSION)


def test_heads_at_the_same_relative_depth_match_across_models(
    engine: Engine, llama: LoadedModel, corpus: dict[str, Relation], corpus_sha: str
) -> None:
    gpt2 = load_model("tiny-gpt2", device="cpu")  # 3 layers like the tiny Llama
    relation = corpus["substance_phase"]
    # Llama: heads in layers 0 and 1, an MLP in layer 0; GPT-2: heads in layers 0 and 2.
    llama_edges = ["input->a0.h0<q>", "a0.h0->m0", "m0->logits", "input->a1.h2<v>", "a1.h2->logits"]
    gpt2_edges = ["input->a0.h1<k>", "a0.h1->logits", "input->a2.h3<v>", "a2.h3->logits"]
    _store(engine, llama, relation, llama_edges, corpus_sha)
    _store(engine, gpt2, relation, gpt2_edges, corpus_sha)
    shared = components_across_models(engine, bins=3)
    # Layer 0 of 3 is depth bin 0 in both models; layer 1 (Llama) and layer 2 (GPT-2) differ.
    assert [(g.kind, g.depth_from, g.models, g.n_circuits) for g in shared] == [
        ("head", 0.0, ["tiny-gpt2", "tiny-llama"], 2)
    ]
    everything = components_across_models(engine, bins=3, min_models=1)
    assert {(g.kind, round(g.depth_from, 2), tuple(g.models)) for g in everything} == {
        ("head", 0.0, ("tiny-gpt2", "tiny-llama")),
        ("head", 0.33, ("tiny-llama",)),
        ("head", 0.67, ("tiny-gpt2",)),
        ("mlp", 0.0, ("tiny-llama",)),
    }
    assert components_across_models(engine, bins=3, category="factual") == []


def test_the_cli_prints_groups_across_models(
    engine: Engine, llama: LoadedModel, corpus: dict[str, Relation], corpus_sha: str
) -> None:
    import json

    from click.testing import CliRunner

    from atlas.cli import main

    _store(engine, llama, corpus["name_gender"], ["input->a1.h2<v>", "a1.h2->logits"], corpus_sha)
    url = engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    result = runner.invoke(
        main, ["query", "across-models", "--min-models", "1", "--database-url", url, "--json"]
    )
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)
    assert [(g["kind"], g["models"], g["relations"]) for g in groups] == [
        ("head", ["tiny-llama"], ["name_gender"])
    ]
    none = runner.invoke(main, ["query", "across-models", "--database-url", url])
    assert none.exit_code == 0 and "2 or more models" in none.output


def _kind_and_bin(name: str, n_layers: int, bins: int) -> tuple[str, int]:
    layer = int(name[1:].split(".")[0])
    return ("head" if name.startswith("a") else "mlp"), int((layer + 0.5) / n_layers * bins)


def test_groups_against_the_null(
    engine: Engine, llama: LoadedModel, corpus: dict[str, Relation], corpus_sha: str
) -> None:
    """Each group's memberships against the sum of the counted circuits' stored inclusion probabilities over
    the group's components (computed here from the rows); circuits that missed their target are left out."""
    from recurrence_check import stored_circuits
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from atlas.db.models import Circuit

    gpt2 = load_model("tiny-gpt2", device="cpu")
    edges = {
        "substance_phase": ["input->a0.h0<q>", "a0.h0->m0", "m0->logits", "input->a1.h2<v>", "a1.h2->logits"],
        "name_gender": ["input->a2.h1<q>", "a2.h1->logits"],
    }
    for name, names in edges.items():
        _store(engine, llama, corpus[name], names, corpus_sha)
    _store(engine, gpt2, corpus["substance_phase"], ["input->a0.h1<k>", "a0.h1->logits"], corpus_sha)
    bins = 3

    def expected() -> dict[tuple[str, int], tuple[int, float]]:
        out: dict[tuple[str, int], tuple[int, float]] = {}
        for model in ("tiny-llama", "tiny-gpt2"):
            for _, members, null in stored_circuits(engine, model):
                for name, p in null.items():
                    key = _kind_and_bin(name, 3, bins)
                    count, total = out.get(key, (0, 0.0))
                    out[key] = (count + (name in members), total + p)
        return out

    want = expected()
    groups = components_across_models(engine, bins=bins, min_models=1)
    assert groups
    for g in groups:
        count, total = want[(g.kind, round(g.depth_from * bins))]
        assert (g.n_members, g.expected_members) == (count, pytest.approx(total, rel=1e-6))
        assert g.enrichment == pytest.approx(count / total, rel=1e-6)
    with Session(engine) as session, session.begin():
        first = session.scalars(select(Circuit.id).order_by(Circuit.id)).first()
        session.execute(update(Circuit).where(Circuit.id == first).values(target_met=False))
    left = {(g.kind, g.depth_from): g for g in components_across_models(engine, bins=bins, min_models=1)}
    assert ("mlp", 0.0) not in left  # m0 was only in the first (llama substance_phase) circuit
    everything = components_across_models(engine, bins=bins, min_models=1, include_unmet=True)
    assert [(g.kind, g.n_members) for g in everything] == [(g.kind, g.n_members) for g in groups]
