"""Bad input the hardening issue found ending in a traceback now ends in one `error:` line and exit status
2, before anything is computed: a corpus file nested 200,000 levels deep (`discover`, `corpus import`), a
NUL in a subject stored on PostgreSQL, a prompt longer than tiny-gpt2's context, and `atlas db upgrade` with
URLs that are not a catalogue's (an unknown scheme, MySQL, a forbidden path, not a URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import pg_database, require_pg

FACTS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Peru", "Lima")]


def atlas(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ATLAS_DATABASE_URL": database}
    return subprocess.run(
        [sys.executable, "-m", "atlas", *args], capture_output=True, text=True, env=env, timeout=600
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def relation_file(folder: Path, name: str, template: str, facts: list[tuple[str, str]]) -> Path:
    data = {
        "name": name.replace("_", " "),
        "properties": {"relation_type": "factual", "domain_name": "x", "range_name": "y", "symmetric": False},
        "prompt_templates": [template],
        "prompt_templates_zs": [template],
        "samples": [{"subject": s, "object": o} for s, o in facts],
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'atlas.db'}"


@pytest.fixture
def postgresql() -> Iterator[str]:
    with pg_database(require_pg()) as url:
        yield url


def test_a_deeply_nested_corpus_file(tmp_path: Path, sqlite: str) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    inside = tmp_path / "inside.json"
    inside.write_text('{"name": "x", "samples": ' + "[" * 200_000 + "]" * 200_000 + "}")
    for path in (deep, inside):
        discover = atlas(
            "discover",
            "--model",
            "tiny-gpt2",
            "--relation",
            path.stem,
            "--corpus",
            str(path),
            database=sqlite,
        )
        assert_user_error(discover, path.name, "nested too deeply")
        imported = atlas("corpus", "import", str(path), database=sqlite)
        assert_user_error(imported, path.name, "nested too deeply")


def test_a_nul_in_a_subject_on_postgresql(tmp_path: Path, postgresql: str) -> None:
    from atlas.db.engine import upgrade

    upgrade(postgresql)
    path = relation_file(tmp_path, "nul_subject", "The capital of {} is", [*FACTS, ("Fr\x00ance", "Paris")])
    imported = atlas("corpus", "import", str(path), database=postgresql)
    assert_user_error(imported, "nul_subject.json", "samples[5].subject", "NUL")
    discover = atlas(
        "discover",
        "--model",
        "tiny-gpt2",
        "--relation",
        "nul_subject",
        "--corpus",
        str(path),
        database=postgresql,
    )
    assert_user_error(discover, "samples[5].subject", "NUL")
    assert "relations added" not in imported.stdout
    listed = atlas("circuits", "list", "--json", database=postgresql)
    assert listed.returncode == 0 and json.loads(listed.stdout)["items"] == []


@pytest.mark.parametrize("template", ["\x00 capital of {} is", "The capital of {} is \ud800"])
def test_a_template_the_catalogue_cannot_store(tmp_path: Path, sqlite: str, template: str) -> None:
    path = tmp_path / "bad_template.json"
    path.write_text(
        json.dumps(
            {
                "properties": {"relation_type": "factual"},
                "prompt_templates": [template],
                "samples": [{"subject": "a", "object": "b"}],
            }
        )
    )
    assert_user_error(atlas("corpus", "import", str(path), database=sqlite), "prompt_templates[0]")


def test_a_prompt_longer_than_the_models_context(tmp_path: Path, sqlite: str) -> None:
    path = relation_file(tmp_path, "long_prompt", "x" * 300 + " The capital of {} is", FACTS)
    result = atlas(
        "discover", "--model", "tiny-gpt2", "--relation", "long_prompt", "--corpus", str(path),
        "--keep-unknown", "--max-facts", "4", database=sqlite,
    )  # fmt: skip
    assert_user_error(result, "tokens: model 'tiny-gpt2' reads at most 256")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("bogus://x", "'bogus' is not supported"),
        ("mysql://user:secret@127.0.0.1/atlas", "'mysql' is not supported"),
        ("postgresql+psycopg2://user@127.0.0.1/atlas", "driver 'psycopg2' is not supported"),
        ("sqlite:////proc/forbidden/x.db", "/proc/forbidden cannot be created"),
        ("not a url", "is not a URL"),
    ],
)
def test_db_upgrade_with_a_url_that_is_not_a_catalogues(url: str, fragment: str, sqlite: str) -> None:
    line = assert_user_error(atlas("db", "upgrade", "--database-url", url, database=sqlite), fragment)
    assert "secret" not in line
    line = assert_user_error(atlas("db", "upgrade", database=url), fragment)  # from ATLAS_DATABASE_URL too
