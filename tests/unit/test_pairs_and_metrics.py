import pytest
import torch

from atlas.core.metrics import hits_at_k, logit_difference, object_logprob
from atlas.core.pairs import PairingError, TokenizedFact, make_batches, make_pairs, tokenize_facts
from atlas.spec.corpus import Fact, Relation


def _fact(subject: str, obj: str, prompt: tuple[int, ...], obj_ids: tuple[int, ...]) -> TokenizedFact:
    return TokenizedFact(Fact(subject, obj), prompt, obj_ids)


def test_partners_have_equal_prompt_length_and_another_object() -> None:
    facts = [
        _fact("A", "x", (1, 2, 3), (10,)),
        _fact("B", "y", (1, 4, 3), (11,)),
        _fact("C", "x", (1, 5, 3), (10,)),
        _fact("Dee", "z", (1, 6, 7, 3), (12, 13)),  # no other subject of this length
    ]
    pairing = make_pairs(facts, facts, seed=1)
    assert [f.subject for f in pairing.unpaired] == ["Dee"]
    for pair in pairing.pairs:
        assert len(pair.prompt_ids) == len(pair.corrupt_prompt_ids)
        assert pair.corrupt.object != pair.fact.object
    partners = {p.fact.subject: p.corrupt.subject for p in pairing.pairs}
    # A and C share their object, so both must be paired with B; B with either
    assert partners["A"] == partners["C"] == "B"
    assert partners["B"] in {"A", "C"}


def test_batches_are_right_padded_with_targets_over_the_whole_object() -> None:
    facts = [_fact("A", "x y", (1, 2), (10, 11, 12)), _fact("B", "z", (1, 3), (13,))]
    batch = make_batches(make_pairs(facts, facts).pairs, batch_size=8, pad_id=0)[0]
    by_subject = {p.fact.subject: i for i, p in enumerate(batch.pairs)}
    a, b = by_subject["A"], by_subject["B"]
    # A's sequence is the prompt plus the object's tokens but the last
    assert batch.clean[a].tolist() == [1, 2, 10, 11]
    assert batch.clean[b].tolist() == [1, 3, 0, 0]
    assert batch.corrupt[a].tolist() == [1, 3, 10, 11]
    assert batch.target_pos[a].tolist() == [1, 2, 3]
    assert batch.target_mask[b].tolist() == [True, False, False]
    assert batch.position_mask()[b].tolist() == [True, True, False, False]


def test_object_logprob_scores_every_object_token() -> None:
    facts = [_fact("A", "x y", (1, 2), (4, 5)), _fact("B", "z", (1, 3), (6,))]
    batch = make_batches(make_pairs(facts, facts).pairs, batch_size=8, pad_id=0)[0]
    logits = torch.randn(2, batch.clean.shape[1], 8)
    logprobs = logits.log_softmax(-1)
    a = [p.fact.subject for p in batch.pairs].index("A")
    expected = logprobs[a, 1, 4] + logprobs[a, 2, 5]
    assert object_logprob(logits, batch)[a].item() == pytest.approx(expected.item(), abs=1e-6)
    diff = logit_difference(logits, batch)[a]
    assert diff.item() == pytest.approx((logits[a, 1, 4] - logits[a, 1, 6]).item(), abs=1e-6)


def test_hits_need_every_object_token_in_the_top_k() -> None:
    facts = [_fact("A", "x y", (1, 2), (4, 5)), _fact("B", "z", (1, 3), (6,))]
    batch = make_batches(make_pairs(facts, facts).pairs, batch_size=8, pad_id=0)[0]
    a = [p.fact.subject for p in batch.pairs].index("A")
    logits = torch.zeros(2, batch.clean.shape[1], 8)
    logits[a, 1, 4] = 5.0  # first token ranked first, second token tied with all others
    assert hits_at_k(logits, batch, k=1)[a].item()  # ties do not rank above the target
    logits[a, 2, 7] = 9.0  # one token now ranks above the second object token
    assert not hits_at_k(logits, batch, k=1)[a].item()
    assert hits_at_k(logits, batch, k=2)[a].item()


def test_an_object_that_tokenizes_to_nothing_is_named() -> None:
    relation = Relation(
        "r", "r", "factual", "", "", False, (), ("{} is",), (Fact("Paris", "France"),), "r.json"
    )
    with pytest.raises(PairingError, match="object 'France' of 'Paris' tokenizes to nothing"):
        tokenize_facts(relation, relation.facts, lambda text: [1, 2], lambda text: [], None)
