"""The discovery memory budget: sizes as written, passes cut to fit, the same per-fact scores whatever the
cut, a clear error where one fact cannot fit, and no trace of the budget in the run's key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas.core import memory
from atlas.core.attribution import fact_scores, graph_of
from atlas.core.circuit import random_circuit
from atlas.core.discover import discover
from atlas.core.evaluation import Evaluator
from atlas.core.memory import MemoryBudget, attribution_fact_bytes, evaluation_fact_bytes, resident_bytes
from atlas.core.metrics import object_logprob
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.spec.errors import Invalid
from atlas.spec.memory import format_bytes, parse_memory
from atlas.spec.params import DiscoveryError, DiscoveryParams
from tests.conftest import batches_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6GB", 6 * 10**9),
        ("512MB", 512 * 10**6),
        ("1.5GiB", 3 * 2**29),
        (" 6 gb ", 6 * 10**9),
        ("4096", 4096),
    ],
)
def test_sizes_parse_as_written(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["6XB", "", "GB", "-1GB", "6 G B", "0", "0.1B", "nanGB"])
def test_bad_sizes_are_refused_naming_the_value(text: str) -> None:
    with pytest.raises(Invalid, match="max-memory must be") as caught:
        parse_memory(text)
    assert repr(text) in str(caught.value)
    assert caught.value.field == "max_memory"


def test_sizes_print_in_decimal_units() -> None:
    assert (
        format_bytes(5.9e9) == "5.9 GB"
        and format_bytes(512 * 10**6) == "512 MB"
        and format_bytes(12) == "12 B"
    )


def _one_batch(model: LoadedModel, relations, n: int = 6) -> Batch:
    batch = batches_for(model, relations["country_capital_city"], n, batch_size=n)[0]
    assert len(set(batch.lengths.tolist())) > 1  # passes are cut to their own width: it must differ
    return batch


def _budget_for(facts: float, need: int) -> MemoryBudget:
    """A budget whose free part holds `facts` facts of `need` bytes (nothing counted resident)."""
    return MemoryBudget(total=int(facts * need), resident=0)


@pytest.mark.parametrize(
    ("method", "level", "ablation"),
    [
        ("eap", "edge", "corrupt"),
        ("eap", "node", "corrupt"),
        ("eap-ig", "edge", "corrupt"),
        ("eap-ig", "node", "corrupt"),
        ("eap-ig", "edge", "mean"),
        ("eap-ig-activations", "edge", "mean"),
    ],
)
def test_per_fact_scores_do_not_depend_on_the_passes(
    tiny_llama: LoadedModel, relations, method: str, level: str, ablation: str
) -> None:
    batch = _one_batch(tiny_llama, relations)
    graph = graph_of(tiny_llama)
    need = attribution_fact_bytes(
        tiny_llama, graph, batch.clean.shape[1], batch.target_pos.shape[1], level, method
    )
    common = {"method": method, "steps": 3, "ablation": ablation, "level": level}
    whole = fact_scores(tiny_llama, [batch], object_logprob, **common, budget=_budget_for(1000, need))
    passes: list[int] = []
    split = fact_scores(
        tiny_llama, [batch], object_logprob, **common, budget=_budget_for(2.5, need), progress=passes.append
    )
    assert passes == [2, 2, 2]
    assert whole.abs().max() > 0
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))


def test_a_fact_that_cannot_fit_is_a_discovery_error_naming_budget_and_need(
    tiny_llama: LoadedModel, relations
) -> None:
    batch = _one_batch(tiny_llama, relations)
    graph = graph_of(tiny_llama)
    need = attribution_fact_bytes(
        tiny_llama, graph, batch.clean.shape[1], batch.target_pos.shape[1], "edge", "eap"
    )
    budget = MemoryBudget(total=need, resident=need // 2)
    with pytest.raises(DiscoveryError) as caught:
        fact_scores(tiny_llama, [batch], object_logprob, method="eap", budget=budget)
    message = str(caught.value)
    assert f"memory budget of {format_bytes(need)}" in message
    assert f"one fact needs about {format_bytes(need)}" in message
    assert caught.value.field == "max_memory"


def test_evaluation_under_a_budget_gives_the_same_outcomes(tiny_llama: LoadedModel, relations) -> None:
    batch = _one_batch(tiny_llama, relations)
    graph = graph_of(tiny_llama)
    need = evaluation_fact_bytes(tiny_llama, graph, batch.clean.shape[1], batch.target_pos.shape[1])
    circuits = [random_circuit(graph, n, seed=n).edges for n in (5, 40)]
    for ablation in ("corrupt", "mean"):
        free = Evaluator(tiny_llama, graph, [batch], object_logprob, ablation, "edge", memory_bytes=2**30)
        tight = Evaluator(
            tiny_llama, graph, [batch], object_logprob, ablation, "edge", budget=_budget_for(1.5, need)
        )
        assert [b.size for b in tight.batches] == [1] * 6 and tight.chunk == 1
        for a, b in zip(free.outcomes(circuits), tight.outcomes(circuits), strict=True):
            np.testing.assert_allclose(b.per_fact, a.per_fact, rtol=1e-4, atol=1e-5)
            assert (a.hit, a.top1) == (b.hit, b.top1)


def test_evaluation_that_cannot_fit_one_fact_is_refused(tiny_llama: LoadedModel, relations) -> None:
    batch = _one_batch(tiny_llama, relations)
    graph = graph_of(tiny_llama)
    with pytest.raises(DiscoveryError, match="one fact's evaluation"):
        Evaluator(
            tiny_llama, graph, [batch], object_logprob, "corrupt", "edge", budget=_budget_for(0.5, 10**6)
        )


def test_discovery_under_a_budget_finds_the_same_circuit_under_the_same_key(
    tiny_llama: LoadedModel, relations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resident memory is counted as the weights plus the runtime's share here (not the test process's
    resident set, which other tests grow), so the budget below holds about one fact a pass."""
    monkeypatch.setattr(memory, "_rss_bytes", lambda: 0)
    params = DiscoveryParams(max_facts=6, known_only=False, ig_steps=2, bootstrap=0, curve=False, top_n=30)
    relation = relations["country_capital_city"]
    plain = discover(tiny_llama, relation, params)
    graph = graph_of(tiny_llama)
    need = attribution_fact_bytes(tiny_llama, graph, 64, 8, "edge", "eap-ig")  # wider than any prompt here
    progress: list[int] = []
    budgeted = discover(
        tiny_llama,
        relation,
        params,
        progress=lambda done, total: progress.append(done),
        max_memory=resident_bytes(tiny_llama) + int(1.5 * need),
    )
    assert progress == list(range(1, 7))  # one fact a pass
    assert budgeted.params.key("edge") == plain.params.key("edge")
    assert torch.equal(budgeted.circuit.edges, plain.circuit.edges)
    torch.testing.assert_close(budgeted.scores, plain.scores, rtol=1e-4, atol=1e-7)
    assert budgeted.discovery.faithfulness == pytest.approx(plain.discovery.faithfulness, rel=1e-4, abs=1e-6)


def _atlas(*args: str, catalogue: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ATLAS_DATABASE_URL": f"sqlite:///{catalogue}"}
    return subprocess.run(
        [sys.executable, "-m", "atlas", *args], capture_output=True, text=True, env=env, timeout=900
    )


def test_the_cli_run_with_a_budget_is_found_again_without_one(tmp_path: Path) -> None:
    catalogue = tmp_path / "atlas.db"
    args = ("discover", "--model", "tiny-llama", "--relation", "substance_phase", "--keep-unknown",
            "--max-facts", "3", "--ig-steps", "2", "--top-n", "20", "--no-curve", "--bootstrap", "0",
            "--json")  # fmt: skip
    first = _atlas(*args, "--max-memory", "20GB", catalogue=catalogue)
    assert first.returncode == 0, first.stderr
    again = _atlas(*args, catalogue=catalogue)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["reused"] is True
    assert json.loads(again.stdout)["id"] == json.loads(first.stdout)["circuit_id"]


@pytest.mark.parametrize(("value", "fragment"), [("6XB", "'6XB'"), ("1MB", "cannot hold one fact's")])
def test_the_cli_refuses_a_bad_or_too_small_budget_in_one_line(
    value: str, fragment: str, tmp_path: Path
) -> None:
    result = _atlas(
        "discover", "--model", "tiny-gpt2", "--relation", "country_language", "--keep-unknown",
        "--max-facts", "2", "--top-n", "5", "--max-memory", value, catalogue=tmp_path / "atlas.db",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0] and "max-memory" in errors[0], result.stderr[-2000:]


def test_the_environment_budget_applies_unless_one_is_given(
    tiny_llama: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atlas.spec.config import get_settings

    get_settings.cache_clear()
    monkeypatch.delenv("ATLAS_MAX_MEMORY_MB", raising=False)
    try:
        assert memory.discovery_budget(tiny_llama) is None
        monkeypatch.setenv("ATLAS_MAX_MEMORY_MB", "4096")
        get_settings.cache_clear()
        budget = memory.discovery_budget(tiny_llama)
        assert budget is not None and budget.total == 4096 * 2**20
        assert budget.resident >= sum(p.numel() * 4 for p in tiny_llama.hf_model.parameters())
        given = memory.discovery_budget(tiny_llama, 6 * 10**9)
        assert given is not None and given.total == 6 * 10**9
        monkeypatch.setenv("ATLAS_MAX_MEMORY_MB", "-1")
        get_settings.cache_clear()
        with pytest.raises(ValueError, match="max_memory_mb"):
            get_settings()
    finally:
        monkeypatch.delenv("ATLAS_MAX_MEMORY_MB", raising=False)
        get_settings.cache_clear()


def test_a_budget_below_what_is_resident_is_refused_before_any_work(tiny_llama: LoadedModel) -> None:
    with pytest.raises(
        DiscoveryError, match=r"memory budget of 1 KB cannot hold one fact's work: about"
    ) as caught:
        memory.discovery_budget(tiny_llama, 1000)
    assert format_bytes(resident_bytes(tiny_llama))[:2] in str(caught.value)
