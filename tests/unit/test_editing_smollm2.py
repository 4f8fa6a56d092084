"""Edits of a real fact in SmolLM2-135M: the new object becomes the top prediction, the original model is
unchanged. Budgeted: fewer steps (FT-M with a larger lr), no context prefixes and fewer covariance tokens
than the defaults."""

from __future__ import annotations

import pytest
import torch

from atlas.core.editing import EditParams, EditRequest, OutcomeProbes, Probe, apply_edit, edit_outcome
from atlas.core.models import LoadedModel

pytestmark = pytest.mark.slow

# SmolLM2 ranks " Paris" first here (tested below); " Tokyo" is far down before the edit.
REQUEST = EditRequest("The capital of France is the city of", "France", "Tokyo", "Paris")
PROBES = OutcomeProbes(
    paraphrases=["The capital city of France is"],
    neighbours=[Probe("The capital of Germany is the city of", "Berlin")],
)


@pytest.mark.parametrize(
    "params",
    [
        EditParams(method="rome", layer=4, steps=10, n_prefixes=1, cov_tokens=1024),
        EditParams(method="ft-m", layer=4, steps=10, lr=2e-3),
    ],
    ids=["rome", "ft-m"],
)
def test_edit_makes_the_new_object_rank_first(smollm2: LoadedModel, params: EditParams) -> None:
    ids = torch.tensor([smollm2.encode(REQUEST.prompt)])
    with torch.no_grad():
        logits_before = smollm2.bridge(ids)
    result = apply_edit(smollm2, REQUEST, params)
    outcome = edit_outcome(smollm2, result.model, REQUEST, PROBES)
    assert outcome.old.rank_before == 1 and outcome.new.rank_before > 10
    assert outcome.efficacy and outcome.efficacy_prob and outcome.new.rank_after == 1
    assert outcome.old.rank_after > 1 and outcome.old.prob_after < outcome.old.prob_before
    with torch.no_grad():
        assert torch.equal(smollm2.bridge(ids), logits_before)
    assert result.edited_sha256 != result.original_sha256
