"""Relation-level analyses in the catalogue (atlas.db.analyses, atlas.analyses, `atlas analyze|analyses`):
real hallucination and ICL results of the tiny Llama stored and read back equal on SQLite and PostgreSQL, a
repeat finds the stored one, bad input stores nothing."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from atlas.analyses import analyze_and_store
from atlas.cli import main
from atlas.core.hallucination import HallucinationParams, analyze_hallucinations
from atlas.core.icl import ICLParams, icl_analysis
from atlas.core.models import LoadedModel
from atlas.db import CatalogueError
from atlas.db.analyses import find_analysis, get_analysis, list_analyses, params_key, store_analysis
from atlas.db.models import Analysis, Model
from atlas.db.models import Relation as RelationRow
from atlas.db.store import ModelInfo, default_code_version, transaction
from atlas.spec.analyses import AnalysisError, make_params
from atlas.spec.corpus import Fact, Relation

RELATION = "country_capital_city"
HALLUCINATION = HallucinationParams(top_n=30, max_facts=3, max_checked=8, batch_size=4, top_k=5)
ICL = ICLParams(k=2, top_n=8, max_facts=3, n_random=2, batch_size=4, known_only=False)


@pytest.fixture(scope="module")
def computed(
    llama: LoadedModel, corpus: dict[str, Relation]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Real results of the tiny Llama (it knows no fact: every answer is wrong, ICL keeps unknown facts):
    kind -> (params, result)."""
    relation = corpus[RELATION]
    return {
        "hallucination": (
            asdict(HALLUCINATION),
            analyze_hallucinations(llama, relation, HALLUCINATION).to_dict(),
        ),
        "icl": (asdict(ICL), icl_analysis(llama, relation, ICL).to_dict()),
    }


def _count(engine: Engine, table: Any) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_real_analyses_read_back_equal_and_a_repeat_stores_nothing(
    engine: Engine, llama: LoadedModel, corpus: dict[str, Relation], computed: dict[str, Any]
) -> None:
    relation = corpus[RELATION]
    hallucination, icl = computed["hallucination"], computed["icl"]
    assert hallucination[1]["n_wrong"] > 0 and hallucination[1]["wrong_circuit"]["nodes"]
    assert icl[1]["n_facts"] == 3 and icl[1]["prob_original"] is not None
    assert find_analysis(engine, "icl", llama, RELATION, icl[0]) is None
    ids = {
        kind: store_analysis(engine, kind, llama, relation, params, result, seconds=1.5)
        for kind, (params, result) in computed.items()
    }
    assert len(set(ids.values())) == 2
    for kind, (params, result) in computed.items():
        stored = get_analysis(engine, ids[kind])
        assert stored["result"] == json.loads(json.dumps(result))
        assert stored["params"] == json.loads(json.dumps(params))
        assert (stored["kind"], stored["model"], stored["relation"]) == (kind, "tiny-llama", RELATION)
        assert stored["seconds"] == 1.5 and stored["code_version"] == default_code_version()
        assert find_analysis(engine, kind, llama, RELATION, params) == ids[kind]
        assert find_analysis(engine, kind, "tiny-llama", RELATION, params) == ids[kind]
    summary = get_analysis(engine, ids["icl"])["summary"]
    assert summary["prob_original"] == icl[1]["prob_original"]
    assert summary["n_icl_only_heads"] == len(icl[1]["icl_only_heads"])
    assert get_analysis(engine, ids["hallucination"])["summary"]["n_wrong"] == hallucination[1]["n_wrong"]

    # The same analysis again (by the loaded model or by name): the same id, nothing new stored.
    assert store_analysis(engine, "icl", llama, relation, *icl) == ids["icl"]
    assert store_analysis(engine, "icl", "tiny-llama", relation, *icl, seconds=9.0) == ids["icl"]
    assert _count(engine, Analysis) == 2
    # Other parameters, or other code: another analysis.
    other = store_analysis(engine, "icl", llama, relation, {**icl[0], "seed": 1}, icl[1])
    newer = store_analysis(engine, "icl", llama, relation, icl[0], icl[1], code_version="other")
    assert len({ids["icl"], other, newer}) == 3
    assert params_key(icl[0], "a") != params_key(icl[0], "b")
    assert params_key(dict(reversed(icl[0].items())), "a") == params_key(icl[0], "a")  # canonical JSON

    # Keyset pages and filters.
    first = list_analyses(engine, limit=2)
    assert [a["id"] for a in first["items"]] == sorted(ids.values()) and first["next"] == max(ids.values())
    rest = list_analyses(engine, after=first["next"], limit=2)
    assert [a["id"] for a in rest["items"]] == [other, newer] and rest["next"] is None
    assert [a["id"] for a in list_analyses(engine, kind="hallucination")["items"]] == [ids["hallucination"]]
    assert len(list_analyses(engine, model="tiny-llama", relation=RELATION, kind="icl")["items"]) == 3
    assert list_analyses(engine, relation="city_in_country")["items"] == []
    assert "result" not in first["items"][0]
    assert list_analyses(engine, kind="icl", with_result=True, limit=1)["items"][0]["result"]


def test_bad_input_stores_nothing(engine: Engine, llama: LoadedModel, corpus: dict[str, Relation]) -> None:
    relation = corpus[RELATION]
    params, result = {"k": 2}, {"model": "tiny-llama", "relation": RELATION, "prob_original": 0.5}
    info = ModelInfo.of(llama)
    bad: list[tuple[str, Any]] = [
        ("unknown analysis kind", lambda: store_analysis(engine, "roles", info, relation, params, result)),
        ("unknown model", lambda: store_analysis(engine, "icl", "no-such-model", relation, params, result)),
        (
            "is of relation",
            lambda: store_analysis(engine, "icl", info, relation, params, {**result, "relation": "x"}),
        ),
        (
            "is of model",
            lambda: store_analysis(engine, "icl", info, relation, params, {**result, "model": "x"}),
        ),
        ("must be JSON", lambda: store_analysis(engine, "icl", info, relation, params, {"x": {1, 2}})),
        ("non-negative", lambda: store_analysis(engine, "icl", info, relation, params, result, float("nan"))),
        ("get_analysis", lambda: get_analysis(engine, 12345)),
    ]
    for expected, call in bad:
        with pytest.raises(CatalogueError) as raised:
            call()
        assert expected in str(raised.value) or expected == "get_analysis", raised.value
        if expected == "get_analysis":
            assert str(raised.value) == "no analysis with id 12345"
    assert find_analysis(engine, "icl", info, RELATION, params) is None
    assert (_count(engine, Analysis), _count(engine, Model), _count(engine, RelationRow)) == (0, 0, 0)

    # A relation catalogued with other content is refused (and the analysis not stored).
    store_analysis(engine, "icl", info, relation, params, result)
    changed = replace(relation, facts=(*relation.facts, Fact("Atlantis", "Poseidonia")))
    with pytest.raises(CatalogueError, match="already catalogued with other content"):
        store_analysis(engine, "icl", info, changed, {"k": 3}, result)
    assert _count(engine, Analysis) == 1


def test_params_are_checked_before_any_model_loads() -> None:
    assert make_params("icl", {"k": 2, "top_n": None}) == ICLParams(k=2)
    assert make_params("hallucination", HALLUCINATION) is HALLUCINATION
    for kind, options, message in [
        ("icl", {"k": 0}, "bad icl parameters"),
        ("icl", {"ablation": "corrupt"}, "head ablation"),
        ("hallucination", {"max_checked": 0}, "bad hallucination parameters"),
        ("icl", {"kk": 2}, "unknown icl parameter"),
        ("roles", {}, "unknown analysis kind"),
        ("lens", {"max_facts": 0}, "bad lens parameters"),
    ]:
        with pytest.raises(AnalysisError, match=message):
            make_params(kind, options)


def test_analyze_and_store_computes_once(tmp_path: Any, corpus: dict[str, Relation]) -> None:
    """The job function and the CLI on SQLite: computed and stored, then found; lens over every component
    (no stored circuit); bad input is one `error:` line, exit 2, nothing stored."""
    from atlas.jobs import catalogue_engine

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    engine = catalogue_engine(url)
    relation = corpus[RELATION]
    lens_id, reused = analyze_and_store("lens", "tiny-llama", relation, {"max_facts": 3}, engine)
    assert not reused
    assert analyze_and_store("lens", "tiny-llama", relation, {"max_facts": 3}, engine) == (lens_id, True)
    lens = get_analysis(engine, lens_id)
    assert lens["params"] == {"max_facts": 3, "template": None, "circuit_id": None}
    assert lens["result"]["n_prompts"] == 3 and lens["result"]["components"]
    with pytest.raises(CatalogueError, match="no circuit with id 7"):
        analyze_and_store("lens", "tiny-llama", relation, {"max_facts": 3, "circuit_id": 7}, engine)

    runner = CliRunner()
    icl = [
        "analyze", "icl", "--model", "tiny-llama", "--relation", RELATION, "--k", "2", "--max-facts", "2",
        "--top-n", "6", "--n-random", "1", "--batch-size", "2", "--keep-unknown", "--database-url", url,
    ]  # fmt: skip
    first = runner.invoke(main, icl)
    assert first.exit_code == 0, first.output
    assert "computed in" in first.output and "random heads ablated" in first.output
    again = runner.invoke(main, [*icl, "--json"])
    assert again.exit_code == 0, again.output
    document = json.loads(again.output)
    assert document["reused"] is True and document["kind"] == "icl" and document["result"]["n_facts"] == 2
    listed = runner.invoke(main, ["analyses", "list", "--kind", "icl", "--database-url", url])
    assert listed.exit_code == 0 and f"{document['id']:>5} icl" in listed.output
    shown = runner.invoke(main, ["analyses", "show", str(lens_id), "--database-url", url])
    assert shown.exit_code == 0 and "every head and MLP" in shown.output
    for args, message in [
        (["analyses", "show", "999"], "error: no analysis with id 999"),
        (["analyze", "icl", "--model", "tiny-llama", "--relation", "nope"], "error: unknown relation 'nope'"),
        (["analyze", "icl", "--model", "tiny-llama", "--relation", RELATION, "--k", "0"], "error: bad icl"),
        (
            ["analyze", "hallucination", "--model", "tiny-llama", "--relation", RELATION, "--top-n", "0"],
            "error: bad hallucination parameters",
        ),
    ]:
        failed = runner.invoke(main, [*args, "--database-url", url])
        assert failed.exit_code == 2, failed.output
        assert failed.output.strip() == failed.output.strip().splitlines()[0]
        assert failed.output.startswith(message), failed.output
    assert _count(engine, Analysis) == 2
    engine.dispose()
