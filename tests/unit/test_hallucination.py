"""Hallucination analysis: correct/wrong split, the wrong answer's circuit and what pushes it."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from atlas.core.attribution import edge_scores, graph_of
from atlas.core.hallucination import HallucinationParams, analyze_hallucinations, fact_outcomes
from atlas.core.metrics import object_logprob
from atlas.core.pairs import TokenizedFact, make_batches, make_pairs, tokenize_facts
from atlas.spec.corpus import Fact, Relation
from tests.unit import reference_lens


def _tokenized(model, relation: Relation) -> list[TokenizedFact]:
    return tokenize_facts(relation, relation.facts, model.encode, model.encode_continuation, None)


def test_outcomes_rank_the_object_and_name_the_top_token(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    tokenized = _tokenized(tiny_llama, relation)[:7]
    outcomes = fact_outcomes(tiny_llama, tokenized, batch_size=3)  # padded batches of uneven lengths
    for item, outcome in zip(tokenized, outcomes, strict=True):
        final = tiny_llama.bridge(torch.tensor([item.prompt_ids]), return_type="logits")[0, -1]
        assert outcome.prediction_id == int(final.argmax())
        assert outcome.object_rank == int((final > final[item.object_ids[0]]).sum()) + 1
        assert outcome.correct == (outcome.prediction_id == item.object_ids[0])
        assert outcome.prediction == tiny_llama.tokenizer.decode([outcome.prediction_id])


def test_facts_whose_object_is_the_top_token_are_correct(tiny_llama, relations) -> None:
    """Raise one token's logit far above the rest: the facts whose object starts with it (and only those) must
    be classed correct, and the others wrong with that token as the prediction."""
    relation = relations["country_capital_city"]
    forced = tiny_llama.encode_continuation(" P")[0]  # " Paris", " Prague", ...

    def boost(logits: torch.Tensor, hook: object) -> torch.Tensor:
        logits = logits.clone()
        logits[..., forced] += 1000.0
        return logits

    tokenized = _tokenized(tiny_llama, relation)
    with tiny_llama.bridge.hooks(fwd_hooks=[("unembed.hook_out", boost)]):
        outcomes = fact_outcomes(tiny_llama, tokenized)
    expected = [t.object_ids[0] == forced for t in tokenized]
    assert any(expected) and not all(expected)
    assert [o.correct for o in outcomes] == expected
    assert all(o.prediction_id == forced and o.prediction == " P" for o in outcomes)
    assert all(o.object_rank > 1 for o, e in zip(outcomes, expected, strict=True) if not e)


def test_wrong_answers_get_a_circuit_and_ranked_pushers(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    params = HallucinationParams(top_n=40, max_facts=4, max_checked=12, batch_size=4, top_k=5)
    result = analyze_hallucinations(tiny_llama, relation, params)
    assert len(result.outcomes) == 12
    assert len(result.wrong) + len(result.correct) == 12
    assert result.wrong, "a random model gets capitals wrong"
    assert result.wrong_nodes and result.wrong_nodes[0] == "input" and result.wrong_nodes[-1] == "logits"
    assert 0 < result.wrong_edges <= 40
    components = [n for n in result.wrong_nodes if n not in ("input", "logits")]
    assert sorted(p.name for p in result.pushers) == sorted(components)
    pushes = [p.push for p in result.pushers]
    assert pushes == sorted(pushes, reverse=True)
    assert set(result.shared_nodes) | set(result.only_wrong) == set(result.wrong_nodes)
    assert len(result.by_lens) == min(5, len(components))
    ranks = {p.name: p.lens_median_rank for p in result.pushers}
    assert [ranks[n] for n in result.by_lens] == sorted(ranks[n] for n in result.by_lens)

    # push = minus the node's attribution toward the wrong token: the EAP node score (gradient at the
    # component's output) equals the sum of its outgoing edge scores, so recompute it independently.
    facts = list(relation.facts)
    random.Random(params.seed).shuffle(facts)
    tokenized = tokenize_facts(relation, facts[:12], tiny_llama.encode, tiny_llama.encode_continuation, None)
    wrong_items = [
        TokenizedFact(
            Fact(t.fact.subject, o.prediction.strip() or o.prediction), t.prompt_ids, (o.prediction_id,)
        )
        for t, o in zip(tokenized, result.outcomes, strict=True)
        if not o.correct
    ][:4]
    pairs = make_pairs(wrong_items, tokenized, seed=params.seed).pairs
    node = edge_scores(
        tiny_llama, make_batches(pairs, 4, 0), object_logprob, method="eap", ablation="corrupt", level="node"
    )
    graph = graph_of(tiny_llama)
    for pusher in result.pushers:
        assert pusher.push == pytest.approx(-float(node[graph.writer_names.index(pusher.name)]), abs=1e-4)

    # The logit lens by hand (tests/unit/reference_lens.py): each component's output at the last prompt
    # position through the final norm and unembedding written out, ranked for the wrong token.
    prompts = [(item.prompt_ids, item.object_ids[0]) for item in wrong_items]
    by_hand = reference_lens.summary(tiny_llama, prompts, components)
    for pusher in result.pushers:
        assert pusher.lens_median_rank == by_hand[pusher.name]["median_rank"], pusher
    assert result.wrong_lens is not None and result.wrong_lens.n_prompts == len(prompts)
    assert [c.name for c in result.wrong_lens.components] == components
    for lensed in result.wrong_lens.components:
        expected = by_hand[lensed.name]
        assert (lensed.median_rank, lensed.best_rank) == (expected["median_rank"], expected["best_rank"])
        assert lensed.mean_rank == pytest.approx(expected["mean_rank"], rel=1e-12)
        assert lensed.top1 == pytest.approx(expected["top1"], rel=1e-12)
        assert lensed.mean_prob == pytest.approx(expected["mean_prob"], rel=1e-4)
    assert len({v["median_rank"] for v in by_hand.values()}) > 1  # the components differ

    data = json.loads(json.dumps(result.to_dict()))
    assert data["n_wrong"] == len(result.wrong) and len(data["pushers"]) == 5
    assert [p["name"] for p in data["pushers"]] == [p.name for p in result.pushers[:5]]
    assert data["params"]["max_facts"] == 4
    # No fact is right in the random model here (fact_outcomes is checked by hand above), so there is no
    # correct circuit to compare with: both Jaccards are undefined (null on the wire).
    assert result.correct == [] and result.correct_nodes == [] and result.correct_edges == 0
    assert data["node_jaccard"] is None and data["edge_jaccard"] is None


def test_no_correct_facts_leaves_the_correct_side_empty(tiny_llama, relations) -> None:
    result = analyze_hallucinations(
        tiny_llama, relations["country_language"], HallucinationParams(top_n=20, max_facts=2, max_checked=4)
    )
    assert not result.correct  # the random model gets none of these right (seeded: always the same)
    assert result.correct_nodes == [] and math.isnan(result.edge_jaccard)
    assert result.only_wrong == result.wrong_nodes and result.wrong_nodes


def test_params_are_validated(tiny_llama, relations) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        analyze_hallucinations(tiny_llama, relations["country_language"], HallucinationParams(max_facts=0))


@pytest.mark.slow
def test_smollm2_gets_some_capitals_right_and_some_wrong(smollm2, relations) -> None:
    relation = relations["country_capital_city"]
    tokenized = _tokenized(smollm2, relation)[:16]
    outcomes = fact_outcomes(smollm2, tokenized)
    correct = [o for o in outcomes if o.correct]
    wrong = [o for o in outcomes if not o.correct]
    assert correct and wrong
    for item, outcome in zip(tokenized, outcomes, strict=True):
        if outcome.correct:
            assert outcome.prediction.strip() and item.fact.object.startswith(outcome.prediction.strip())
        else:
            assert outcome.object_rank > 1
