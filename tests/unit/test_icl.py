"""In-context learning: demonstration prompts, zero-shot vs k-shot circuits and the Table 2 ablation check."""

from __future__ import annotations

import json
import math

import pytest
import torch

from atlas.core.hooks import result_hook
from atlas.core.icl import (
    ICLParams,
    _aligned_pairs,
    choose_demonstrations,
    demonstration_text,
    icl_analysis,
    icl_template,
    mean_object_probs,
)
from atlas.core.metrics import object_logprob
from atlas.core.pairs import make_batches
from atlas.spec.corpus import Fact
from tests.unit import reference_patching as ref


def test_demonstrations_are_written_before_the_query(relations) -> None:
    relation = relations["country_capital_city"]
    demos = [Fact("France", "Paris"), Fact("Japan", "Tokyo")]
    assert (
        demonstration_text(relation, demos, 1)
        == "The capital of France is Paris.\nThe capital of Japan is Tokyo.\n"
    )
    template = icl_template(relation, demos, 1)
    assert template.count("{}") == 1
    assert relation.prompt("Italy", template).endswith("Tokyo.\nThe capital of Italy is")


def test_demonstrations_are_seeded_distinct_and_never_queried(relations) -> None:
    relation = relations["country_capital_city"]
    demos, queries = choose_demonstrations(relation, 3, seed=1)
    assert len(demos) == 3 and len({d.object for d in demos}) == 3
    assert set(demos).isdisjoint(queries) and len(demos) + len(queries) == len(relation.facts)
    assert choose_demonstrations(relation, 3, seed=1) == (demos, queries)
    assert choose_demonstrations(relation, 3, seed=2)[0] != demos


def test_icl_and_zero_shot_pairs_are_the_same_facts(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    demos, queries = choose_demonstrations(relation, 2)
    base, shot = relation.template(None), icl_template(relation, demos)
    zero_shot, icl = _aligned_pairs(tiny_llama, relation, queries, (base, shot), 0)
    assert len(zero_shot) == len(icl) > 0
    prefix = tiny_llama.encode(demonstration_text(relation, demos))
    for zs, ks in zip(zero_shot, icl, strict=True):
        assert (zs.fact, zs.corrupt) == (ks.fact, ks.corrupt)
        # The byte tokenizer never merges across the newline: the ICL prompt is the demos, then the query.
        assert ks.prompt_ids == (*prefix, *zs.prompt_ids)
        differ = [i for i, (a, b) in enumerate(zip(ks.clean_ids, ks.corrupt_ids, strict=True)) if a != b]
        assert differ and min(differ) >= len(prefix)  # clean and corrupt differ in the query subject only


def test_ablated_probabilities_match_ablating_heads_by_hand(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    demos, queries = choose_demonstrations(relation, 2)
    _, icl = _aligned_pairs(
        tiny_llama, relation, queries[:6], (relation.template(None), icl_template(relation, demos)), 0
    )
    batches = make_batches(icl, 3, 0)
    heads = [(0, 1), (2, 3)]
    original, none, zeroed = mean_object_probs(tiny_llama, batches, [None, [], heads], ablation="zero")
    assert none == pytest.approx(original, rel=1e-5, abs=0)

    def zero(layer: int, head: int) -> tuple[str, object]:
        def hook(result: torch.Tensor, hook: object) -> torch.Tensor:
            result = result.clone()
            result[:, :, head] = 0.0
            return result

        return result_hook(layer), hook

    by_hand = []
    with tiny_llama.bridge.hooks(fwd_hooks=[zero(*h) for h in heads]):
        for batch in batches:
            logits = tiny_llama.bridge(batch.clean, return_type="logits")
            by_hand += object_logprob(logits, batch).exp().tolist()
    assert zeroed == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-4, abs=0)
    assert zeroed != pytest.approx(original, rel=1e-3, abs=0)


def test_icl_analysis_on_a_tiny_model(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    params = ICLParams(k=2, top_n=8, max_facts=4, n_random=2, batch_size=4, known_only=False)
    result = icl_analysis(tiny_llama, relation, params)
    assert result.n_facts == 4
    demos, queries = choose_demonstrations(relation, 2)
    assert result.demonstrations == [f"{d.subject} -> {d.object}" for d in demos]
    assert set(result.icl_only_heads) <= set(result.icl_heads)
    assert set(result.icl_only_heads).isdisjoint(result.zero_shot_heads)
    assert len(result.icl_heads) <= 8 and len(result.zero_shot_heads) <= 8
    assert len(result.random_draws) == 2
    assert result.prob_random_ablated == pytest.approx(sum(result.random_draws) / 2, rel=1e-9, abs=0)

    # The values by hand (tests/unit/reference_patching.py): the first four facts (all are kept), each run
    # alone and unpadded; the whole object's probability teacher-forced; the ICL-only heads replaced by their
    # mean output over every real token of the four ICL prompts (the one batch of four).
    zero_shot, icl = _aligned_pairs(
        tiny_llama, relation, queries, (relation.template(None), icl_template(relation, demos)), 0
    )
    zero_shot, icl = zero_shot[:4], icl[:4]

    def prob(pair, logits: torch.Tensor) -> float:
        return math.exp(ref.object_logprob(logits, pair))

    assert result.hit_zero_shot == pytest.approx(
        sum(ref.hit_at_10(ref.logits_of(tiny_llama, p.clean_ids), p) for p in zero_shot) / 4, abs=1e-12
    )
    by_hand_zero_shot = sum(prob(p, ref.logits_of(tiny_llama, p.clean_ids)) for p in zero_shot) / 4
    by_hand_original = sum(prob(p, ref.logits_of(tiny_llama, p.clean_ids)) for p in icl) / 4
    assert result.icl_only_heads, "the ICL circuit should hold heads the zero-shot one lacks"
    components = ref.writer_names(tiny_llama.n_layers, tiny_llama.n_heads)[1:]
    kept = {name for name in components if name not in result.icl_only_heads}
    by_hand_ablated = (
        sum(
            prob(p, ref.node_patched_logits(tiny_llama, p.clean_ids, mean, kept))
            for p, mean in zip(icl, ref.ablated_outputs(tiny_llama, icl, "mean"), strict=True)
        )
        / 4
    )
    print(
        f"\nby hand: zero-shot {by_hand_zero_shot:.3e}, ICL {by_hand_original:.3e},"
        f" ablated {by_hand_ablated:.3e}"
    )
    assert result.prob_zero_shot == pytest.approx(by_hand_zero_shot, rel=1e-4, abs=0)
    assert result.prob_original == pytest.approx(by_hand_original, rel=1e-4, abs=0)
    assert result.prob_icl_ablated == pytest.approx(by_hand_ablated, rel=1e-4, abs=0)
    assert by_hand_ablated != pytest.approx(by_hand_original, rel=1e-3, abs=0)  # the ablation matters here
    assert by_hand_zero_shot != pytest.approx(by_hand_original, rel=1e-3, abs=0)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["params"]["k"] == 2 and data["icl_only_heads"] == result.icl_only_heads


def test_icl_with_no_known_fact_reports_nothing(tiny_llama, relations) -> None:
    # A random model ranks no object in its top 10: nothing is left to explain.
    result = icl_analysis(tiny_llama, relations["country_capital_city"], ICLParams(k=2, max_facts=2))
    assert result.n_facts == 0  # seeded: always the same
    assert math.isnan(result.prob_original) and result.icl_heads == []
    assert json.loads(json.dumps(result.to_dict()))["prob_original"] is None


def test_icl_params_are_validated(tiny_llama, relations) -> None:
    with pytest.raises(ValueError, match="mean or zero"):
        icl_analysis(tiny_llama, relations["country_capital_city"], ICLParams(ablation="corrupt"))  # type: ignore[arg-type]


@pytest.mark.slow
def test_icl_prompts_on_smollm2(smollm2, relations) -> None:
    relation = relations["country_capital_city"]
    demos, queries = choose_demonstrations(relation, 3)
    zero_shot, icl = _aligned_pairs(
        smollm2, relation, queries[:8], (relation.template(None), icl_template(relation, demos)), 0
    )
    assert len(icl) == len(zero_shot) >= 6  # real tokenization keeps the same facts paired
    prefix = len(smollm2.encode(demonstration_text(relation, demos)))
    for zs, ks in zip(zero_shot, icl, strict=True):
        assert len(ks.prompt_ids) >= prefix + len(zs.prompt_ids) - 1
    zs_prob, icl_prob = (
        mean_object_probs(smollm2, make_batches(pairs, 8, 0), [None])[0] for pairs in (zero_shot, icl)
    )
    assert 0 < zs_prob < 1 and 0 < icl_prob < 1
