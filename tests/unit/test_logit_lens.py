"""Logit lens: answers known by construction (the last residual is the model's own output)."""

from __future__ import annotations

import pytest
import torch

from atlas.core.logit_lens import component_ranks, first_top, residual_ranks, target_rank_prob
from atlas.core.models import LoadedModel
from tests.unit import reference_lens as reference

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


def test_the_reference_lens_reads_the_last_residual_as_the_model_does(model: LoadedModel) -> None:
    """The lens written out in the test (reference_lens.py) is the model's own head on the final residual."""
    ids = torch.tensor([model.encode(PROMPT)])
    with torch.no_grad():
        final = model.hf_model(ids, output_hidden_states=True)
        _, cache = model.bridge.run_with_cache(ids, names_filter=lambda name: name == "ln_final.hook_in")
    torch.testing.assert_close(
        reference.lens(model, cache["ln_final.hook_in"][0]).float(), final.logits[0], atol=1e-4, rtol=1e-4
    )


def test_component_ranks_project_each_head_and_mlp(model: LoadedModel) -> None:
    logits = _output(model)
    for target in (int(logits.argmax()), int(logits.argsort()[len(logits) // 3])):
        rows = component_ranks(model, PROMPT, target)
        expected = [
            (name, layer, kind)
            for layer in range(model.n_layers)
            for name, kind in [
                *((f"a{layer}.h{h}", "head") for h in range(model.n_heads)),
                (f"m{layer}", "mlp"),
            ]
        ]
        assert [(r.name, r.layer, r.kind) for r in rows] == expected
        # Every head and MLP by hand: its output at the last position through the lens written out.
        vectors = reference.component_vectors(model, model.encode(PROMPT))
        for row in rows:
            rank, prob = reference.rank_and_prob(reference.lens(model, vectors[row.name]), target)
            assert row.rank == rank, row
            assert row.prob == pytest.approx(prob, rel=1e-4, abs=1e-9), row
            assert row.to_dict()["rank"] == rank
        assert len({r.rank for r in rows}) > 1  # the components disagree: a mix-up would show


def test_residual_ranks_by_hand(model: LoadedModel) -> None:
    """Every layer's residual (from the Hugging Face forward's hidden states) through the lens by hand."""
    target = int(_output(model).argsort()[len(_output(model)) // 4])
    rows = residual_ranks(model, PROMPT, target)
    vectors = reference.residual_vectors(model, model.encode(PROMPT))
    by_name = {row.name: row for row in rows}
    assert set(vectors) < set(by_name)  # the last residual is the model's output, checked above
    for name, vector in vectors.items():
        rank, prob = reference.rank_and_prob(reference.lens(model, vector), target)
        assert (by_name[name].rank, by_name[name].layer) == (rank, int(name[1:]) if name != "input" else -1)
        assert by_name[name].prob == pytest.approx(prob, rel=1e-4, abs=1e-9)


def test_token_ids_and_out_of_vocabulary_targets(tiny_llama: LoadedModel) -> None:
    ids = tiny_llama.encode(PROMPT)
    assert residual_ranks(tiny_llama, ids, 5) == residual_ranks(tiny_llama, PROMPT, 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        component_ranks(tiny_llama, PROMPT, 10**6)
