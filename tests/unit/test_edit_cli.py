"""`atlas edit` inline (in-process, the model cached once), `atlas edits list|show|compare` and `atlas query
edit-components` on a temporary SQLite catalogue; bad input is one `error:` line, exit status 2, nothing
stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlas.cli import main

EDIT = ["edit", "--model", "tiny-llama", "--relation", "country_capital_city", "--layer", "1", "--steps", "3"]


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from atlas.spec.config import get_settings

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    monkeypatch.setenv("ATLAS_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def _count_edits(url: str) -> int:
    from atlas.db.engine import make_engine
    from atlas.db.store import count_rows

    return count_rows(make_engine(url))["edits"]


def test_edit_inline_then_list_show_and_query(catalogue: str) -> None:
    runner = CliRunner()
    done = runner.invoke(main, [*EDIT, "--subject", "France", "--new-object", "Berlin", "--json"])
    assert done.exit_code == 0, done.output
    edit = json.loads(done.stdout)
    assert edit["reused"] is False and edit["new_object"] == "Berlin" and edit["components"]
    again = runner.invoke(main, [*EDIT, "--subject", "France", "--new-object", "Berlin"])
    assert again.exit_code == 0 and "already in the catalogue" in again.stdout
    assert _count_edits(catalogue) == 1

    listed = runner.invoke(main, ["edits", "list", "--model", "tiny-llama", "--method", "rome", "--json"])
    assert [e["id"] for e in json.loads(listed.stdout)["items"]] == [edit["id"]]
    shown = runner.invoke(main, ["edits", "show", str(edit["id"])])
    assert shown.exit_code == 0 and "'Paris' -> 'Berlin'" in shown.stdout
    query = [
        "query",
        "edit-components",
        "--model",
        "tiny-llama",
        "--method",
        "rome",
        "--layer",
        "1",
        "--json",
    ]
    rows = json.loads(runner.invoke(main, query).stdout)
    assert sum(r["n_edits"] for r in rows) == len(edit["components"])
    compared = json.loads(runner.invoke(main, ["edits", "compare", "--json"]).stdout)
    assert compared[0]["n_edits"] == 1
    missing = runner.invoke(main, ["edits", "show", "999"])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: unknown edit 999")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--subject", "Narnia", "--new-object", "Berlin"], "subject 'Narnia' is not in relation"),
        (["--subject", "France", "--new-object", ""], "the new object is empty"),
        (["--subject", "France", "--new-object", "Paris"], "equals the old object"),
        (["--subject", "France", "--new-object", "Berlin", "--method", "nope"], "unknown edit method 'nope'"),
        (["--subject", "France", "--new-object", "Berlin", "--layer", "99"], "layer 99 is outside model"),
    ],
)
def test_bad_edits_are_one_error_line(catalogue: str, arguments: list[str], message: str) -> None:
    done = CliRunner().invoke(main, [*EDIT, *arguments])
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert _count_edits(catalogue) == 0
