"""The catalogue's commands (atlas/cli/catalogue.py, circuits.py, query.py, jobs.py) as the `atlas` group runs
them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from db_helpers import CODE_VERSION, HAND, Discovered, with_circuit
from recurrence_check import expected_recurrence, stored_circuits
from sqlalchemy import update

from atlas.cli import main
from atlas.db.engine import make_engine
from atlas.db.models import Circuit
from atlas.db.store import store_discovery
from atlas.spec.corpus import bundled_corpus_path, load_corpus


@pytest.fixture
def cli() -> click.Group:
    return main


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sub' / 'atlas.db'}"


def _run(cli: click.Group, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_upgrade_import_list_and_queries(
    cli: click.Group, url: str, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    code, out = _run(cli, "db", "upgrade", "--database-url", url)
    assert code == 0, out
    code, out = _run(cli, "corpus", "import", str(bundled_corpus_path()), "--database-url", url, "--json")
    assert code == 0, out
    n = len(load_corpus(bundled_corpus_path()))
    assert json.loads(out) == {"added": n, "unchanged": 0, "facts": json.loads(out)["facts"]}
    code, out = _run(cli, "corpus", "import", str(bundled_corpus_path()), "--database-url", url)
    assert (code, out.strip()) == (0, f"0 relations added (0 facts), {n} unchanged")

    engine = make_engine(url)
    ids = []
    for name, edges in HAND.items():
        d = discovered[name]
        result = with_circuit(d.result, edges)
        ids.append(store_discovery(engine, result, d.model, d.relation, corpus_sha, CODE_VERSION))
    engine.dispose()

    code, out = _run(cli, "db", "fill-records", "--database-url", url)
    assert (code, out.strip()) == (0, "circuit records stored: 0")  # the store wrote them
    engine = make_engine(url)
    with engine.begin() as connection:  # as a circuit stored before migration 0009
        connection.execute(update(Circuit).where(Circuit.id == ids[0]).values(record_json=None))
    engine.dispose()
    code, out = _run(cli, "db", "fill-records", "--database-url", url)
    assert (code, out.strip()) == (0, "circuit records stored: 1")
    code, out = _run(cli, "circuits", "list", "--database-url", url, "--limit", "2", "--json")
    page = json.loads(out)
    assert [c["id"] for c in page["items"]] == ids[:2] and page["next_after"] == ids[1]
    code, out = _run(cli, "circuits", "list", "--database-url", url, "--limit", "2", "--after", str(ids[1]))
    assert code == 0 and "substance_phase" in out and "name_gender" not in out
    code, out = _run(cli, "query", "recurring", "--model", "tiny-llama", "--database-url", url, "--json")
    assert {(c["component"], c["n_relations"]) for c in json.loads(out)["components"]} == {
        ("a0.h0", 3),
        ("m0", 2),
        ("a1.h2", 2),
    }
    code, out = _run(
        cli, "query", "recurring", "--model", "tiny-llama", "--category", "bias", "--database-url", url
    )
    assert code == 0 and "no component" in out
    code, out = _run(cli, "query", "compare", *map(str, ids[:2]), "--database-url", url, "--json")
    assert json.loads(out)["shared_nodes"] == ["a0.h0", "m0"]
    code, out = _run(cli, "query", "compare", *map(str, ids[:2]), "--database-url", url)
    assert code == 0 and "node Jaccard 0.500, edge Jaccard 0.429" in out
    code, out = _run(cli, "query", "overlap", "--model", "tiny-llama", "--database-url", url)
    assert code == 0 and "0.667" in out
    code, out = _run(cli, "circuits", "show", str(ids[0]), "--database-url", url)
    assert code == 0 and len(json.loads(out)["edges"]) == 5
    code, out = _run(cli, "circuits", "recut", str(ids[0]), "--top-n", "100", "--database-url", url, "--json")
    cut = json.loads(out)
    assert (
        code == 0
        and cut["top_n"] == 100
        and 0 < cut["n_edges"] <= 100
        and len(cut["edges"]) == cut["n_edges"]
    )
    code, out = _run(cli, "circuits", "export", str(ids[0]), "--database-url", url)
    assert code == 0 and out.startswith("digraph") and out.count("->") >= 5
    code, out = _run(cli, "circuits", "export", str(ids[0]), "--format", "eap-ig", "--database-url", url)
    graph = json.loads(out)
    assert sum(e["in_graph"] for e in graph["edges"].values()) == 5
    code, out = _run(cli, "query", "component", "a0.h0", "--model", "tiny-llama", "--database-url", url)
    assert code == 0 and "name_gender" in out
    code, out = _run(cli, "query", "component", "x9", "--database-url", url)
    assert code == 2 and "a<layer>.h<head>" in out


def test_errors_are_one_line(cli: click.Group, url: str, tmp_path: Path) -> None:
    code, out = _run(cli, "circuits", "list", "--database-url", url)
    assert code == 2 and out.startswith("error: database:") and "atlas db upgrade" in out
    _run(cli, "db", "upgrade", "--database-url", url)
    code, out = _run(cli, "query", "compare", "1", "2", "--database-url", url)
    assert (code, out.strip()) == (2, "error: no circuit with id 1, 2")
    code, out = _run(cli, "corpus", "import", str(tmp_path / "missing"), "--database-url", url)
    assert code == 2 and out.startswith("error:") and "not found" in out


def test_commands_do_not_import_torch() -> None:
    code = (
        "import sys, atlas.cli, atlas.db.queries, atlas.db.recurrence, atlas.db.cross_model,"
        " atlas.db.engine; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_query_recurring_against_the_plain_computation(
    cli: click.Group, url: str, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    """The command's JSON and table against the statistics computed from the stored rows the plain way; bad
    values end with one `error:` line and exit status 2."""
    _run(cli, "db", "upgrade", "--database-url", url)
    engine = make_engine(url)
    for name, edges in HAND.items():
        d = discovered[name]
        store_discovery(engine, with_circuit(d.result, edges), d.model, d.relation, corpus_sha, CODE_VERSION)
    want = expected_recurrence(stored_circuits(engine, "tiny-llama"))
    engine.dispose()
    base = ("query", "recurring", "--model", "tiny-llama", "--database-url", url)
    code, out = _run(cli, *base, "--min-count", "1", "--json")
    assert code == 0, out
    body = json.loads(out)
    assert (body["n_relations"], body["n_circuits"], body["n_unmet"], body["controls"]) == (3, 3, 0, [])
    assert {c["component"] for c in body["components"]} == {name for name, e in want.items() if e.count}
    for c in body["components"]:
        e = want[c["component"]]
        assert (c["n_relations"], c["relations"]) == (e.count, e.relations)
        assert (c["expected"], c["enrichment"]) == (pytest.approx(e.expected), pytest.approx(e.enrichment))
        assert (c["p_value"], c["q_value"]) == (pytest.approx(e.p_value), pytest.approx(e.q_value))
        assert c["mean_stability"] is not None and c["generic"] is None and c["plumbing"] is False
    cut = sorted(e.q_value for e in want.values() if e.count)[1]
    code, out = _run(cli, *base, "--min-count", "1", "--max-q", str(cut))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "tiny-llama: 3 relations, 3 circuits counted; controls: none"
    assert lines[1].split()[:6] == ["component", "count", "expected", "enrich", "q", "stable"]
    shown = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(shown) == {name for name, e in want.items() if e.count and e.q_value <= cut}
    for name, cells in shown.items():
        assert cells[1] == str(want[name].count) and cells[2] == f"{want[name].expected:.2f}"
        assert float(cells[4]) == pytest.approx(want[name].q_value, rel=0.05)  # printed to 2 digits
    code, out = _run(cli, *base, "--min-stability", "1")
    assert code == 0 and "passes the filters" in out
    for bad, message in (
        (("--max-q", "2"), "error: max_q must be between 0 and 1, got 2.0"),
        (("--min-stability", "-1"), "error: min_stability must be between 0 and 1, got -1.0"),
        (("--min-count", "0"), "error: min_count must be at least 1, got 0"),
    ):
        code, out = _run(cli, *base, *bad)
        assert (code, out.strip()) == (2, message)
