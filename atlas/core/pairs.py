"""Clean/corrupt prompt pairs, tokenized and batched for attribution and evaluation.

The corrupt prompt swaps the subject for another subject of the same relation whose prompt has the same
token length and whose object differs, so activations align position by position. Each sequence is the
prompt followed by the clean object's tokens but the last: the metric scores the whole object.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from atlas.spec.corpus import Fact, Relation
from atlas.spec.errors import Invalid

Encode = Callable[[str], list[int]]


class PairingError(Invalid):
    """A fact that cannot be turned into a scored prompt; the message names the fact."""


@dataclass(frozen=True)
class Pair:
    fact: Fact
    corrupt: Fact
    prompt_ids: tuple[int, ...]
    corrupt_prompt_ids: tuple[int, ...]
    object_ids: tuple[int, ...]
    corrupt_object_ids: tuple[int, ...]

    @property
    def clean_ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.object_ids[:-1]

    @property
    def corrupt_ids(self) -> tuple[int, ...]:
        return self.corrupt_prompt_ids + self.object_ids[:-1]


@dataclass
class Pairing:
    pairs: list[Pair]
    unpaired: list[Fact] = field(default_factory=list)  # no same-length subject with another object


@dataclass(frozen=True)
class TokenizedFact:
    fact: Fact
    prompt_ids: tuple[int, ...]
    object_ids: tuple[int, ...]


def tokenize_facts(
    relation: Relation,
    facts: Sequence[Fact],
    encode: Encode,
    encode_object: Encode,
    template: str | int | None,
    context: int | None = None,
) -> list[TokenizedFact]:
    """Each fact's prompt and object as token ids. `context`: the model's context length; a prompt whose
    object (fed teacher-forced, but its last token) would not fit is refused, naming the fact."""
    chosen = relation.template(template)
    tokenized = []
    for fact in facts:
        object_ids = tuple(encode_object(" " + fact.object))
        if not object_ids:
            raise PairingError(
                f"{relation.name}: object {fact.object!r} of {fact.subject!r} tokenizes to nothing"
            )
        prompt_ids = tuple(encode(relation.prompt(fact.subject, chosen)))
        needed = len(prompt_ids) + len(object_ids) - 1
        if context is not None and needed > context:
            raise PairingError(
                f"{relation.name}: {fact.subject!r} -> {fact.object!r} needs {needed} positions, the object "
                f"included; the model reads at most {context} (use a shorter template)"
            )
        tokenized.append(TokenizedFact(fact, prompt_ids, object_ids))
    return tokenized


def make_pairs(facts: Sequence[TokenizedFact], partners: Sequence[TokenizedFact], seed: int = 0) -> Pairing:
    """Pair each fact with a partner of equal prompt length and a different object, preferring partners
    whose object also starts with a different token (the logit-difference metric needs one)."""
    by_length: dict[int, list[TokenizedFact]] = defaultdict(list)
    for partner in partners:
        by_length[len(partner.prompt_ids)].append(partner)
    rng = random.Random(seed)
    pairing = Pairing(pairs=[])
    for item in facts:
        candidates = [
            p
            for p in by_length[len(item.prompt_ids)]
            if p.fact.object != item.fact.object and p.fact.subject != item.fact.subject
        ]
        candidates = [p for p in candidates if p.object_ids[0] != item.object_ids[0]] or candidates
        if not candidates:
            pairing.unpaired.append(item.fact)
            continue
        partner = rng.choice(candidates)
        pairing.pairs.append(
            Pair(
                item.fact,
                partner.fact,
                item.prompt_ids,
                partner.prompt_ids,
                item.object_ids,
                partner.object_ids,
            )
        )
    return pairing


@dataclass
class Batch:
    """Right-padded pairs. Real tokens never attend to padding on their right, so no mask is needed
    in the forward pass; padded positions are masked out of every score."""

    clean: torch.Tensor  # [batch, pos] token ids
    corrupt: torch.Tensor  # [batch, pos]
    lengths: torch.Tensor  # [batch] real tokens per row
    target_pos: torch.Tensor  # [batch, k] position whose logits predict object token k
    target_tok: torch.Tensor  # [batch, k] object token k
    target_mask: torch.Tensor  # [batch, k] False past the object's end
    foil_tok: torch.Tensor  # [batch] the corrupt object's first token
    pairs: list[Pair]
    # A micro-batch cut from a larger batch carries that batch's mean writer outputs `[1, n_writers, 1, d]`:
    # the mean ablation is over the batch, whatever pass it is split into (None: over this batch).
    ablation_mean: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.clean.shape[0])

    def position_mask(self) -> torch.Tensor:
        """Bool [batch, pos]: True on real tokens."""
        positions = torch.arange(self.clean.shape[1], device=self.lengths.device)
        return positions[None, :] < self.lengths[:, None]

    def to(self, device: torch.device) -> Batch:
        tensors = {
            name: getattr(self, name).to(device)
            for name in ("clean", "corrupt", "lengths", "target_pos", "target_tok", "target_mask", "foil_tok")
        }
        mean = None if self.ablation_mean is None else self.ablation_mean.to(device)
        return Batch(**tensors, pairs=self.pairs, ablation_mean=mean)

    def rows(self, start: int, stop: int) -> Batch:
        """Pairs start..stop-1 as a batch of their own, padding past their longest prompt dropped (each
        row's values do not depend on the others, nor on padding to its right)."""
        width = int(self.lengths[start:stop].max())
        return Batch(
            clean=self.clean[start:stop, :width],
            corrupt=self.corrupt[start:stop, :width],
            lengths=self.lengths[start:stop],
            target_pos=self.target_pos[start:stop],
            target_tok=self.target_tok[start:stop],
            target_mask=self.target_mask[start:stop],
            foil_tok=self.foil_tok[start:stop],
            pairs=self.pairs[start:stop],
            ablation_mean=self.ablation_mean,
        )


def batch_order(pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs in the order make_batches puts them (by length, stable): the order of per-fact results."""
    return sorted(pairs, key=lambda p: len(p.clean_ids))


def make_batches(pairs: Sequence[Pair], batch_size: int, pad_id: int) -> list[Batch]:
    """Batches of pairs of similar length (sorted), so little compute goes to padding."""
    ordered = batch_order(pairs)
    return [_collate(ordered[i : i + batch_size], pad_id) for i in range(0, len(ordered), batch_size)]


def _collate(pairs: Sequence[Pair], pad_id: int) -> Batch:
    n, width = len(pairs), max(len(p.clean_ids) for p in pairs)
    k = max(len(p.object_ids) for p in pairs)
    clean = torch.full((n, width), pad_id, dtype=torch.long)
    corrupt = torch.full((n, width), pad_id, dtype=torch.long)
    target_pos = torch.zeros(n, k, dtype=torch.long)
    target_tok = torch.zeros(n, k, dtype=torch.long)
    target_mask = torch.zeros(n, k, dtype=torch.bool)
    for row, pair in enumerate(pairs):
        length = len(pair.clean_ids)
        clean[row, :length] = torch.tensor(pair.clean_ids)
        corrupt[row, :length] = torch.tensor(pair.corrupt_ids)
        n_obj = len(pair.object_ids)
        target_pos[row, :n_obj] = torch.arange(n_obj) + len(pair.prompt_ids) - 1
        target_tok[row, :n_obj] = torch.tensor(pair.object_ids)
        target_mask[row, :n_obj] = True
    return Batch(
        clean=clean,
        corrupt=corrupt,
        lengths=torch.tensor([len(p.clean_ids) for p in pairs]),
        target_pos=target_pos,
        target_tok=target_tok,
        target_mask=target_mask,
        foil_tok=torch.tensor([p.corrupt_object_ids[0] for p in pairs]),
        pairs=list(pairs),
    )
