"""Prompts with an object after them, batched with the atlas's own pairs and metrics: whole-object
log-probabilities (teacher-forced), the object's first-token rank, and the model's top prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from atlas.core.logit_lens import target_rank_prob
from atlas.core.metrics import hits_at_k, object_logprob
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch, Pair, make_batches
from atlas.spec.corpus import Fact

Item = tuple[tuple[int, ...], tuple[int, ...]]  # (prompt ids, object ids)


def item_pair(prompt_ids: Sequence[int], object_ids: Sequence[int]) -> Pair:
    """A Pair with itself as the corrupt side: the batching and metrics of `pairs` need only this."""
    fact = Fact("", "")
    prompt, obj = tuple(prompt_ids), tuple(object_ids)
    return Pair(fact, fact, prompt, prompt, obj, obj)


def one_batch(items: Sequence[Item], model: LoadedModel) -> Batch:
    """All items in one right-padded batch (rows sorted by length: read rows back via `batch.pairs`)."""
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    pairs = [item_pair(prompt, obj) for prompt, obj in items]
    return make_batches(pairs, len(pairs), pad)[0].to(model.device)


@dataclass(frozen=True)
class ObjectScore:
    logprob: float  # whole object, teacher-forced
    rank: int  # 1-based rank of the object's first token at the prompt's last position
    first: bool  # every object token ranked first where it is predicted (greedy decoding gives it)
    top_token: int  # the model's top prediction at the prompt's last position


@torch.no_grad()
def score_items(model: LoadedModel, items: Sequence[Item]) -> list[ObjectScore]:
    """Scores of each (prompt, object) item, in the order given (one forward pass)."""
    if not items:
        return []
    batch = one_batch(items, model)
    logits = model.bridge(batch.clean)
    logprob = object_logprob(logits, batch)
    first = hits_at_k(logits, batch, k=1)
    rows = torch.arange(batch.size, device=logits.device)
    final = logits[rows, batch.target_pos[:, 0]]  # [batch, vocab]
    ranks = [int(target_rank_prob(final[row], int(batch.target_tok[row, 0]))[0]) for row in range(batch.size)]
    by_item = {
        (pair.prompt_ids, pair.object_ids): ObjectScore(
            float(logprob[row]), ranks[row], bool(first[row]), int(final[row].argmax())
        )
        for row, pair in enumerate(batch.pairs)
    }
    return [by_item[(tuple(prompt), tuple(obj))] for prompt, obj in items]
