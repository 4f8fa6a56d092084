"""Logit lens: answers known by construction (the last residual is the model's own output)."""

from __future__ import annotations

import pytest
import torch

from atlas.core.hooks import result_hook
from atlas.core.logit_lens import (
    component_ranks,
    first_top,
    lens_logits,
    residual_ranks,
    target_rank_prob,
)
from atlas.core.models import LoadedModel

PROMPT = "The capital of France is"


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def model(request: pytest.FixtureRequest) -> LoadedModel:
    return request.getfixturevalue(request.param)


def _output(model: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(torch.tensor([model.encode(PROMPT)]))[0, -1]


def test_last_residual_is_the_models_own_prediction(model: LoadedModel) -> None:
    logits = _output(model)
    top = int(logits.argmax())
    other = int(logits.argsort()[len(logits) // 2])  # a token ranked mid-vocabulary
    for target in (top, other):
        rows = residual_ranks(model, PROMPT, target)
        assert [r.name for r in rows] == ["input"] + [f"r{layer}" for layer in range(model.n_layers)]
        rank, prob = target_rank_prob(logits, target)
        assert rows[-1].rank == int(rank)
        assert rows[-1].prob == pytest.approx(float(prob), rel=1e-4)
    assert residual_ranks(model, PROMPT, top)[-1].rank == 1
    assert first_top(residual_ranks(model, PROMPT, top)) is not None


def test_component_ranks_project_each_head_and_mlp(model: LoadedModel) -> None:
    target = int(_output(model).argmax())
    rows = component_ranks(model, PROMPT, target)
    assert len(rows) == model.n_layers * (model.n_heads + 1)
    assert (
        rows[0].name == "a0.h0"
        and rows[model.n_heads].name == "m0"
        and rows[-1].name == f"m{model.n_layers - 1}"
    )
    assert {r.kind for r in rows} == {"head", "mlp"}
    # One head by hand: its result at the last position through ln_final and the unembedding.
    layer, head = model.n_layers - 1, 1
    _, cache = model.bridge.run_with_cache(torch.tensor([model.encode(PROMPT)]))
    logits = lens_logits(model, cache[result_hook(layer)][0, -1, head])
    expected = 1 + int((logits > logits[target]).sum())
    row = next(r for r in rows if r.name == f"a{layer}.h{head}")
    assert row.rank == expected and row.layer == layer
    assert 0 < row.prob < 1 and row.to_dict()["rank"] == expected


def test_token_ids_and_out_of_vocabulary_targets(tiny_llama: LoadedModel) -> None:
    ids = tiny_llama.encode(PROMPT)
    assert residual_ranks(tiny_llama, ids, 5) == residual_ranks(tiny_llama, PROMPT, 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        component_ranks(tiny_llama, PROMPT, 10**6)
