"""Logit-lens ranks of a circuit's components over many prompts: where the answer first surfaces.

`logit_lens.component_ranks` reads one prompt; this aggregates over a relation's facts. Per component (each
head's result and each MLP's output at the last prompt position, read through the final norm and
unembedding) it keeps the target token's median, mean and best rank and how often it is the top token;
the residual stream after each layer is read the same way. Ranks are 1-based (1 = top).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from atlas.core.logit_lens import ComponentRank, component_ranks, residual_ranks
from atlas.core.models import LoadedModel
from atlas.core.pairs import tokenize_facts
from atlas.spec.corpus import Fact, Relation
from atlas.spec.json_safe import finite

# A prompt as the lens reads it: its token ids (as the model is fed them) and the target token id.
LensPrompt = tuple[Sequence[int], int]


@dataclass(frozen=True)
class ComponentLens:
    name: str
    layer: int
    kind: str  # "head", "mlp", "input" or "resid"
    median_rank: float
    mean_rank: float
    best_rank: int
    top1: float  # fraction of prompts where the target is this component's top token
    mean_prob: float


@dataclass
class LensSummary:
    n_prompts: int
    components: list[ComponentLens] = field(default_factory=list)  # forward order
    residual: list[ComponentLens] = field(default_factory=list)  # input, r0, r1, ...

    @property
    def first_top1(self) -> ComponentLens | None:
        """The first component (forward order) whose median rank is 1: where the answer surfaces."""
        return next((c for c in self.components if c.median_rank <= 1), None)

    @property
    def best(self) -> ComponentLens | None:
        """The component with the lowest median rank (the earliest of ties)."""
        return min(self.components, key=lambda c: c.median_rank, default=None)

    @property
    def first_top1_layer(self) -> int | None:
        """The first layer after which the residual stream's median rank is 1."""
        return next((c.layer for c in self.residual if c.kind == "resid" and c.median_rank <= 1), None)

    def to_dict(self) -> dict[str, Any]:
        first, best = self.first_top1, self.best
        return finite(
            {
                "n_prompts": self.n_prompts,
                "first_top1": None if first is None else first.name,
                "best": None if best is None else best.name,
                "first_top1_layer": self.first_top1_layer,
                "components": [asdict(c) for c in self.components],
                "residual": [asdict(c) for c in self.residual],
            }
        )


def _aggregate(per_prompt: list[list[ComponentRank]], keep: set[str] | None) -> list[ComponentLens]:
    if not per_prompt:
        return []
    out = []
    for column in zip(*per_prompt, strict=True):
        head = column[0]
        if keep is not None and head.name not in keep:
            continue
        ranks = [row.rank for row in column]
        out.append(
            ComponentLens(
                name=head.name,
                layer=head.layer,
                kind=head.kind,
                median_rank=float(statistics.median(ranks)),
                mean_rank=statistics.fmean(ranks),
                best_rank=min(ranks),
                top1=sum(r == 1 for r in ranks) / len(ranks),
                mean_prob=statistics.fmean(row.prob for row in column),
            )
        )
    return out


def lens_summary(
    model: LoadedModel, prompts: Sequence[LensPrompt], nodes: Sequence[str] | None = None
) -> LensSummary:
    """Target ranks under the logit lens over `prompts`, for the heads and MLPs among `nodes` (a circuit's
    node names; None: every head and MLP) and for the residual stream after every layer."""
    keep = None if nodes is None else set(nodes)
    components = [component_ranks(model, list(ids), target) for ids, target in prompts]
    residual = [residual_ranks(model, list(ids), target) for ids, target in prompts]
    return LensSummary(len(prompts), _aggregate(components, keep), _aggregate(residual, None))


def relation_lens(
    model: LoadedModel,
    relation: Relation,
    nodes: Sequence[str] | None = None,
    facts: Sequence[Fact] | None = None,
    template: str | int | None = None,
) -> LensSummary:
    """`lens_summary` on a relation's prompts (by default all its facts), the target being the first token
    of each fact's object."""
    chosen = relation.facts if facts is None else facts
    tokenized = tokenize_facts(relation, chosen, model.encode, model.encode_continuation, template)
    return lens_summary(model, [(t.prompt_ids, t.object_ids[0]) for t in tokenized], nodes)
