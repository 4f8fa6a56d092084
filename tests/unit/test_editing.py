"""Knowledge edits on tiny random models: ROME's update is rank one and maps k* to v*, FT-M changes one
weight, the original model is never touched, bad input fails before any work, results are JSON-safe."""

from __future__ import annotations

import json

import pytest
import torch

from atlas.core.editing import (
    EDITORS,
    EditError,
    Editor,
    EditParams,
    EditRequest,
    OutcomeProbes,
    Probe,
    apply_edit,
    edit_outcome,
    probes_for,
    resolved_params,
)
from atlas.core.editing import apply as editing_apply
from atlas.core.editing.base import mlp_out_weight
from atlas.core.editing.covariance import key_covariance, offline_text
from atlas.core.editing.rome import compute_update, subject_last_index
from atlas.core.models import LoadedModel
from atlas.spec.corpus import Relation

REQUEST = EditRequest("The capital of France is", "France", "Berlin", "Paris")
# Small and quick: tiny models cannot learn much anyway, these tests check the algebra and the plumbing.
QUICK = {"steps": 3, "n_prefixes": 2, "cov_tokens": 256}
PROBES = OutcomeProbes(
    paraphrases=["France's capital is", "The capital city of France is"],
    neighbours=[Probe("The capital of Spain is", "Madrid")],
    others=[Probe("The language of Italy is", "Italian")],
)


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def model(request: pytest.FixtureRequest) -> LoadedModel:
    return request.getfixturevalue(request.param)


def _logits(model: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(torch.tensor([model.encode(REQUEST.prompt)]))


def test_rome_update_is_rank_one_and_maps_the_key_to_the_value(model: LoadedModel) -> None:
    params = resolved_params(EditParams(method="rome", layer=1, **QUICK))
    update = compute_update(model, REQUEST, params)
    mlp = mlp_out_weight(model, 1)
    old = mlp.matrix(model.weights).double()
    new = mlp.matrix({mlp.name: update.weight}).double()
    # The weights are float32: rounding leaves singular values near 1e-7 of the update's, not zero.
    assert torch.linalg.matrix_rank(new - old, rtol=1e-4).item() == 1
    bias = model.weights[mlp.bias].double() if mlp.bias else 0.0
    assert torch.allclose(new @ update.key.double() + bias, update.value.double(), atol=1e-4)
    assert (
        float(update.delta.norm()) <= params.clamp_norm * float((update.value - update.delta).norm()) + 1e-4
    )


def test_edit_leaves_the_original_untouched_and_the_copy_uses_its_weights(model: LoadedModel) -> None:
    weights_before = {name: tensor.clone() for name, tensor in model.weights.items()}
    logits_before = _logits(model)
    result = apply_edit(model, REQUEST, EditParams(method="rome", layer=1, **QUICK))
    assert all(torch.equal(model.weights[name], tensor) for name, tensor in weights_before.items())
    assert torch.equal(_logits(model), logits_before)
    assert not torch.allclose(_logits(result.model), logits_before)
    assert result.edited_sha256 == result.model.weights_sha256 != result.original_sha256
    assert result.original_sha256 == model.weights_sha256
    assert result.weight_names == [mlp_out_weight(model, 1).name]
    # The bridge's forward and the recorded weights are the same tensors.
    edited = result.model.weights[result.weight_names[0]]
    assert any(p.data_ptr() == edited.data_ptr() for p in result.model.hf_model.parameters())
    json.dumps(result.to_dict(), allow_nan=False)


def test_ftm_changes_only_the_chosen_weight(tiny_llama: LoadedModel) -> None:
    result = apply_edit(tiny_llama, REQUEST, EditParams(method="ft-m", layer=2, steps=3, lr=1e-2))
    changed = [
        name for name, t in result.model.weights.items() if not torch.equal(t, tiny_llama.weights[name])
    ]
    assert changed == ["model.layers.2.mlp.down_proj.weight"]
    assert result.steps_run == 3 and result.params.lr == 1e-2 and result.delta_norm > 0
    assert result.losses[-1] < result.losses[0]  # the new object's NLL goes down


def test_ftm_reaches_the_new_object_on_gpt2(tiny_gpt2: LoadedModel) -> None:
    result = apply_edit(tiny_gpt2, REQUEST, EditParams(method="ft-m", layer=2, steps=10, lr=1e-2))
    outcome = edit_outcome(tiny_gpt2, result.model, REQUEST, PROBES)
    assert outcome.efficacy and outcome.new.rank_after == 1 and outcome.new.rank_before > 1
    assert outcome.new.prob_after > outcome.new.prob_before
    json.dumps(outcome.to_dict(), allow_nan=False)


def test_outcome_of_an_unchanged_model(tiny_llama: LoadedModel, relations: dict[str, Relation]) -> None:
    relation = relations["country_capital_city"]
    probes = probes_for(relation, REQUEST, relations, n_neighbours=3, n_others=4)
    assert REQUEST.prompt not in probes.paraphrases and probes.paraphrases
    assert len(probes.neighbours) == 3 and len(probes.others) == 4
    assert all("France" not in p.prompt for p in probes.neighbours)
    outcome = edit_outcome(tiny_llama, tiny_llama, REQUEST, probes)
    assert outcome.locality == outcome.locality_neighbours == outcome.locality_others == 1.0
    assert (
        outcome.old.rank_before == outcome.old.rank_after
        and outcome.old.prob_before == outcome.old.prob_after
    )
    assert outcome.n_paraphrases == len(probes.paraphrases)


def test_subject_position(tiny_llama: LoadedModel) -> None:
    text = "Note: The capital of France is"
    start = text.index("France")
    position = subject_last_index(tiny_llama, text, start, start + len("France"))
    assert tiny_llama.tokenizer.decode(tiny_llama.encode(text)[position]) == "e"  # byte tokens: France's last


def test_covariance_is_reused_and_hooks_are_cleaned_up(tiny_llama: LoadedModel) -> None:
    logits = _logits(tiny_llama)
    first = key_covariance(tiny_llama, 0, 256)
    assert key_covariance(tiny_llama, 0, 256) is first
    assert first.n_tokens == 256 and first.sample_sha256
    matrix = first.matrix
    assert matrix.shape == (128, 128) and torch.allclose(matrix, matrix.T)
    assert torch.linalg.eigvalsh(matrix).min() > -1e-9
    assert torch.equal(_logits(tiny_llama), logits)  # the early-stopping hook left nothing behind
    assert len(offline_text()) > 50_000


def _bad(**changes: object) -> tuple[EditRequest, EditParams]:
    request = {"prompt": REQUEST.prompt, "subject": "France", "target_new": "Berlin", "target_old": "Paris"}
    params = {"method": "rome", "layer": 1}
    for key, value in changes.items():
        (request if key in request else params)[key] = value
    return EditRequest(**request), EditParams(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subject": "Germany"}, "subject 'Germany' does not occur in the prompt"),
        ({"subject": " "}, "subject is empty"),
        ({"target_new": ""}, "new object is empty"),
        ({"target_new": " Paris"}, "equals the old object"),
        ({"layer": 3}, "layer 3 is outside model 'tiny-llama' \\(layers 0..2\\)"),
        ({"layer": -1}, "layer -1 is outside"),
        ({"method": "memit"}, "unknown edit method 'memit'; choose from rome, ft-m"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"lr": -1.0}, "lr must be positive"),
    ],
)
def test_bad_input_fails_before_any_work(
    tiny_llama: LoadedModel, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], message: str
) -> None:
    def boom(*args: object) -> None:
        raise AssertionError("work started on bad input")

    for name, editor in list(EDITORS.items()):
        monkeypatch.setitem(EDITORS, name, Editor(name, boom, editor.default_steps, editor.default_lr, ""))  # type: ignore[arg-type]
    monkeypatch.setattr(editing_apply, "copy_with", boom)
    monkeypatch.setattr(editing_apply, "plain_copy", boom)
    request, params = _bad(**changes)
    with pytest.raises(EditError, match=message):
        apply_edit(tiny_llama, request, params)
    assert issubclass(EditError, ValueError)


def test_discover_and_logit_lens_run_on_the_edited_copy(
    tiny_llama: LoadedModel, relations: dict[str, Relation]
) -> None:
    from atlas.core.discover import DiscoveryParams, discover
    from atlas.core.editing import circuit_diff
    from atlas.core.logit_lens import residual_ranks

    edited = apply_edit(tiny_llama, REQUEST, EditParams(method="ft-m", layer=1, steps=2, lr=1e-2)).model
    params = DiscoveryParams(ig_steps=1, top_n=10, max_facts=4, known_only=False, curve=False)
    relation = relations["country_capital_city"]
    before, after = discover(tiny_llama, relation, params), discover(edited, relation, params)
    diff = circuit_diff(before.circuit, after.circuit, before.scores, after.scores)
    assert diff.n_edges_kept + len(diff.edges_lost) == before.circuit.n_edges
    assert any(change.delta != 0 for change in diff.rescored)  # the edit moved some scores
    target = edited.encode_continuation(" Berlin")[0]
    assert residual_ranks(edited, REQUEST.prompt, target) != residual_ranks(
        tiny_llama, REQUEST.prompt, target
    )
