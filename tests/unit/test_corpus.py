"""Tests for atlas.spec.corpus: the LRE-format reader, the bundled corpus and the corpus hash."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from services import LRE, require_lre

from atlas.spec.corpus import (
    CATEGORIES,
    CorpusError,
    Fact,
    Relation,
    bundled_corpus_path,
    corpus_hash,
    load_corpus,
    load_relation_file,
)


def _valid() -> dict[str, Any]:
    return {
        "name": "country capital city",
        "prompt_templates": ["The capital city of {} is", "The capital of {} is"],
        "prompt_templates_zs": ["The capital of {} is the city of"],
        "properties": {
            "relation_type": "factual",
            "domain_name": "country",
            "range_name": "city",
            "symmetric": False,
        },
        "samples": [
            {"subject": "France", "object": "Paris"},
            {"subject": "Argentina", "object": "Buenos Aires"},
            {"subject": "Peru", "object": "Lima"},
        ],
    }


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def _relation(tmp_path: Path, **changes: Any) -> Relation:
    return load_relation_file(_write(tmp_path / "country_capital_city.json", {**_valid(), **changes}))


# --- the bundled corpus -------------------------------------------------------------------------------------


def test_bundled_corpus_loads_and_covers_all_categories() -> None:
    path = bundled_corpus_path()
    assert path.is_dir()
    assert path.parts[-3:] == ("atlas", "data", "corpus")
    corpus = load_corpus(path)
    assert len(corpus) >= 8
    assert {r.category for r in corpus.values()} == set(CATEGORIES)
    assert sum(len(r.facts) >= 20 for r in corpus.values()) >= 0.75 * len(corpus)
    for relation in corpus.values():
        # files sit under <category>/<name>.json
        assert Path(relation.source).parent.name == relation.category
        assert len(relation.prompt_templates) >= 2
        assert len(relation.prompt_templates_zs) >= 1
        for template in relation.prompt_templates + relation.prompt_templates_zs:
            assert template == template.strip(), (relation.name, template)


def test_bundled_corpus_has_multi_word_and_non_ascii_objects() -> None:
    capitals = load_corpus(bundled_corpus_path())["country_capital_city"]
    objects = {f.object for f in capitals.facts}
    assert "Brasília" in objects
    assert any(" " in o for o in objects)
    assert capitals.prompt("Brazil", "The capital of {} is") == "The capital of Brazil is"


# --- the LRE files ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lre() -> dict[str, Relation]:
    return load_corpus(require_lre())  # skipped without ../shared/lre; failed in CI


def test_every_lre_file_loads(lre: dict[str, Relation]) -> None:
    assert len(lre) == 47
    assert len(list(LRE.rglob("*.json"))) == 47
    counts = {c: sum(r.category == c for r in lre.values()) for c in CATEGORIES}
    assert counts == {"factual": 26, "commonsense": 8, "linguistic": 6, "bias": 7, "control": 0}
    assert all(r.facts and (r.prompt_templates or r.prompt_templates_zs) for r in lre.values())


def test_lre_double_escaped_unicode_is_decoded(lre: dict[str, Relation]) -> None:
    capitals = {f.subject: f.object for f in lre["country_capital_city"].facts}
    assert capitals["Brazil"] == "Brasília"
    assert capitals["Brazil"][4] == "\u00ed"
    assert capitals["Colombia"] == "Bogotá"
    assert not any("\\" in f.subject + f.object for r in lre.values() for f in r.facts)


def test_lre_multi_token_objects_and_cleanup(lre: dict[str, Relation]) -> None:
    capitals = {f.subject: f.object for f in lre["country_capital_city"].facts}
    assert capitals["Argentina"] == "Buenos Aires"
    assert capitals["United States"] == "Washington D.C."
    # surrounding whitespace ("Jimmy Carter ") is stripped
    assert "Jimmy Carter" in {f.subject for f in lre["presidents_birth_year"].facts}
    assert all(
        f.subject == f.subject.strip() and f.object == f.object.strip()
        for f in lre["presidents_birth_year"].facts
    )
    # exact duplicates are dropped, different objects for one subject are kept
    names = [f.subject for f in lre["name_gender"].facts]
    assert len(names) == len(set(names)) == 18
    products = lre["product_by_company"].facts
    assert len(products) == len(set(products)) < 522
    superclass = [f.subject for f in lre["object_superclass"].facts]
    assert len(superclass) > len(set(superclass))


# --- malformed input ----------------------------------------------------------------------------------------


def _sample(i: int, **values: Any) -> dict[str, Any]:
    data = _valid()
    data["samples"][i] = values
    return data


MALFORMED: list[tuple[str, Any, str]] = [
    ("not-json", '{"name": "x",\n  "samples": [}', "line 2 col"),
    ("top-list", [_valid()], "top level:"),
    ("no-samples", {k: v for k, v in _valid().items() if k != "samples"}, "samples:"),
    ("empty-samples", {**_valid(), "samples": []}, "samples:"),
    ("samples-not-list", {**_valid(), "samples": {"subject": "a"}}, "samples:"),
    ("sample-not-object", {**_valid(), "samples": ["France"]}, "samples[0]:"),
    ("missing-subject", _sample(1, object="Paris"), "samples[1]:"),
    ("missing-object", _sample(2, subject="Peru"), "samples[2]:"),
    ("object-not-string", _sample(1, subject="Peru", object=7), "samples[1].object"),
    ("subject-null", _sample(0, subject=None, object="Paris"), "samples[0].subject"),
    ("empty-subject", _sample(2, subject="", object="Lima"), "samples[2].subject"),
    ("blank-object", _sample(1, subject="Peru", object="  \t"), "samples[1].object"),
    ("no-placeholder", {**_valid(), "prompt_templates_zs": ["The capital is"]}, "prompt_templates_zs[0]:"),
    ("two-placeholders", {**_valid(), "prompt_templates": ["ok {}", "{} and {}"]}, "prompt_templates[1]:"),
    ("template-not-string", {**_valid(), "prompt_templates": [3]}, "prompt_templates[0]:"),
    ("templates-not-list", {**_valid(), "prompt_templates": "The capital of {} is"}, "prompt_templates:"),
    ("no-templates", {**_valid(), "prompt_templates": [], "prompt_templates_zs": []}, "prompt_templates:"),
    (
        "unknown-type",
        {**_valid(), "properties": {**_valid()["properties"], "relation_type": "trivia"}},
        "properties.relation_type:",
    ),
    ("no-properties", {k: v for k, v in _valid().items() if k != "properties"}, "properties:"),
    ("properties-not-object", {**_valid(), "properties": "factual"}, "properties:"),
    (
        "symmetric-not-bool",
        {**_valid(), "properties": {**_valid()["properties"], "symmetric": "no"}},
        "properties.symmetric:",
    ),
]


@pytest.mark.parametrize(("case", "data", "entry"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_relation_raises_corpus_error(tmp_path: Path, case: str, data: Any, entry: str) -> None:
    path = _write(tmp_path / f"{case}.json", data)
    with pytest.raises(CorpusError) as raised:
        load_relation_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {entry}"), message
    assert "\n" not in message


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.json", '{\n  "name": "x",\n  "samples": [,]\n}')
    with pytest.raises(CorpusError, match=r"broken\.json: line 3 col \d+: invalid JSON"):
        load_relation_file(path)


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nowhere\.json: file: not found"):
        load_relation_file(tmp_path / "nowhere.json")
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nowhere")
    _write(tmp_path / "empty" / "notes.txt", "no relations here")
    with pytest.raises(CorpusError, match=r"no \.json"):
        load_corpus(tmp_path / "empty")


def test_duplicate_relation_names_name_both_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "a" / "capitals.json", _valid())
    second = _write(tmp_path / "b" / "capitals.json", _valid())
    with pytest.raises(CorpusError) as raised:
        load_corpus(tmp_path)
    assert str(first) in str(raised.value)
    assert str(second) in str(raised.value)


def test_load_corpus_single_file_and_folder(tmp_path: Path) -> None:
    _write(tmp_path / "x" / "b_rel.json", _valid())
    path = _write(tmp_path / "a_rel.json", _valid())
    assert list(load_corpus(path)) == ["a_rel"]
    corpus = load_corpus(tmp_path)
    assert list(corpus) == ["a_rel", "b_rel"]
    assert corpus["b_rel"].source == str(tmp_path / "x" / "b_rel.json")


def test_reading_normalises_samples(tmp_path: Path) -> None:
    data = _valid()
    data["samples"] = [
        {"subject": "  France ", "object": "Paris\n"},
        {"subject": "France", "object": "Paris"},
        {"subject": "Peru", "object": "Lima"},
        {"subject": "France", "object": "Lyon"},
        {"subject": "Peru", "object": "Lima"},
    ]
    relation = load_relation_file(_write(tmp_path / "rel.json", data))
    assert relation.facts == (Fact("France", "Paris"), Fact("Peru", "Lima"), Fact("France", "Lyon"))
    assert (relation.name, relation.title, relation.category) == ("rel", "country capital city", "factual")
    assert (relation.domain, relation.range, relation.symmetric) == ("country", "city", False)


# --- templates ----------------------------------------------------------------------------------------------


def test_template_selection(tmp_path: Path) -> None:
    relation = _relation(tmp_path)
    assert relation.template() == "The capital of {} is the city of"
    assert relation.template(0) == "The capital of {} is the city of"
    assert relation.template(1) == "The capital city of {} is"
    assert relation.template(2) == "The capital of {} is"
    assert relation.template("Paris is the capital of {}") == "Paris is the capital of {}"
    for bad in (3, -1):
        with pytest.raises(CorpusError, match=r"country_capital_city\.json: template"):
            relation.template(bad)
    with pytest.raises(CorpusError, match="no placeholder"):
        relation.template("no placeholder")
    with pytest.raises(CorpusError, match="exactly one"):
        relation.template("{} and {}")


def test_template_falls_back_without_zero_shot_templates(tmp_path: Path) -> None:
    data = _valid()
    del data["prompt_templates_zs"]
    relation = load_relation_file(_write(tmp_path / "rel.json", data))
    assert relation.prompt_templates_zs == ()
    assert relation.template() == "The capital city of {} is"
    assert relation.template(1) == "The capital of {} is"


def test_prompt_substitutes_only_the_placeholder(tmp_path: Path) -> None:
    relation = _relation(tmp_path)
    assert relation.prompt("France") == "The capital of France is the city of"
    assert relation.prompt("France", 1) == "The capital city of France is"
    assert relation.prompt("{x}", "In {0} style, {} is") == "In {0} style, {x} is"


# --- hashing ------------------------------------------------------------------------------------------------


def test_corpus_hash_is_order_independent_and_content_sensitive(tmp_path: Path) -> None:
    corpus = load_corpus(bundled_corpus_path())
    relations = list(corpus.values())
    digest = corpus_hash(relations)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert corpus_hash(reversed(relations)) == digest
    # the source path is not content
    moved = [dataclasses.replace(r, source=str(tmp_path / r.name)) for r in relations]
    assert corpus_hash(moved) == digest
    first = relations[0]
    changed = dataclasses.replace(first, facts=(Fact(first.facts[0].subject, "Elsewhere"), *first.facts[1:]))
    assert corpus_hash([changed, *relations[1:]]) != digest
    assert corpus_hash(relations[1:]) != digest
