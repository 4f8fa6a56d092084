"""What an edit did, measured on the original and the edited model side by side.

- Efficacy: at the edit prompt, the new object is ranked first (every token of it, teacher-forced: greedy
  decoding produces it), and whether P(new) > P(old) (whole objects, teacher-forced).
- Generalization: the same two tests on paraphrases, the relation's other templates (`prompt_templates`
  and `prompt_templates_zs`) filled with the subject.
- Locality: the fraction of probes whose top prediction (first token after the prompt) is unchanged by the
  edit: other subjects of the same relation and facts of other relations. Also CounterFact's
  neighbourhood score: the fraction of same-relation neighbours where P(their object) > P(new object).
- The old object's fate: its first-token rank and whole-object probability before and after.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from atlas.core.editing.base import EditRequest, object_ids
from atlas.core.editing.scoring import Item, ObjectScore, score_items
from atlas.core.models import LoadedModel
from atlas.spec.corpus import Relation
from atlas.spec.json_safe import finite


@dataclass(frozen=True)
class Probe:
    prompt: str
    object: str  # the fact's own object


@dataclass
class OutcomeProbes:
    paraphrases: list[str] = field(default_factory=list)  # other prompts about the edited subject
    neighbours: list[Probe] = field(default_factory=list)  # same relation, other subjects
    others: list[Probe] = field(default_factory=list)  # facts of other relations


def probes_for(
    relation: Relation,
    request: EditRequest,
    others: Mapping[str, Relation] | Sequence[Relation] = (),
    n_neighbours: int = 10,
    n_others: int = 10,
    seed: int = 0,
) -> OutcomeProbes:
    """Probes from a corpus: every other template of `relation` with the subject, up to `n_neighbours`
    other facts of `relation` and up to `n_others` facts of the other relations (seeded samples, each
    with its relation's default template)."""
    rng = random.Random(seed)
    templates = dict.fromkeys(relation.prompt_templates_zs + relation.prompt_templates)
    paraphrases = [relation.prompt(request.subject, t) for t in templates]
    neighbour_facts = [f for f in relation.facts if f.subject != request.subject]
    neighbours = [
        Probe(relation.prompt(f.subject), f.object)
        for f in rng.sample(neighbour_facts, min(n_neighbours, len(neighbour_facts)))
    ]
    pool = [
        Probe(other.prompt(f.subject), f.object)
        for other in (others.values() if isinstance(others, Mapping) else others)
        if other.name != relation.name
        for f in other.facts
    ]
    return OutcomeProbes(
        paraphrases=[p for p in dict.fromkeys(paraphrases) if p != request.prompt],
        neighbours=neighbours,
        others=rng.sample(pool, min(n_others, len(pool))),
    )


@dataclass
class ObjectFate:
    rank_before: int  # 1-based rank of the object's first token at the edit prompt
    rank_after: int
    prob_before: float  # whole object, teacher-forced
    prob_after: float


@dataclass
class EditOutcome:
    efficacy: bool  # the new object is ranked first at the edit prompt
    efficacy_prob: bool  # P(new) > P(old) at the edit prompt, after the edit
    new: ObjectFate
    old: ObjectFate
    n_paraphrases: int
    generalization: float  # fraction of paraphrases where the new object is ranked first (nan: none)
    generalization_prob: float  # fraction of paraphrases with P(new) > P(old)
    n_neighbours: int
    n_others: int
    locality: float  # fraction of all locality probes whose top prediction is unchanged
    locality_neighbours: float  # the same, same-relation neighbours only
    locality_others: float  # the same, other relations' facts only
    neighbourhood_score: float  # fraction of neighbours with P(own object) > P(new object), after

    def to_dict(self) -> dict[str, Any]:
        return dict(finite(asdict(self)))


def _fraction(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def edit_outcome(
    original: LoadedModel, edited: LoadedModel, request: EditRequest, probes: OutcomeProbes
) -> EditOutcome:
    """Score the request and probes on both models (one batched forward pass each)."""

    def ids(text: str) -> tuple[int, ...]:
        return tuple(original.encode(text))

    def obj(text: str) -> tuple[int, ...]:
        return tuple(object_ids(original, text))

    new, old = obj(request.target_new), obj(request.target_old)
    items: list[Item] = [(ids(request.prompt), new), (ids(request.prompt), old)]
    items += [(ids(p), o) for p in probes.paraphrases for o in (new, old)]
    items += [(ids(p.prompt), o) for p in probes.neighbours for o in (obj(p.object), new)]
    items += [(ids(p.prompt), obj(p.object)) for p in probes.others]
    before = score_items(original, items)
    after = score_items(edited, items)

    def fate(index: int) -> ObjectFate:
        b, a = before[index], after[index]
        return ObjectFate(b.rank, a.rank, math.exp(b.logprob), math.exp(a.logprob))

    n_para, n_neigh = len(probes.paraphrases), len(probes.neighbours)
    para = [(after[i], after[i + 1]) for i in range(2, 2 + 2 * n_para, 2)]
    start = 2 + 2 * n_para
    neigh = [(before[i], after[i], after[i + 1]) for i in range(start, start + 2 * n_neigh, 2)]
    start += 2 * n_neigh
    other = list(zip(before[start:], after[start:], strict=True))

    def unchanged(b: ObjectScore, a: ObjectScore) -> bool:
        return b.top_token == a.top_token

    kept_neigh = [unchanged(b, a) for b, a, _ in neigh]
    kept_other = [unchanged(b, a) for b, a in other]
    return EditOutcome(
        efficacy=after[0].first,
        efficacy_prob=after[0].logprob > after[1].logprob,
        new=fate(0),
        old=fate(1),
        n_paraphrases=n_para,
        generalization=_fraction([n.first for n, _ in para]),
        generalization_prob=_fraction([n.logprob > o.logprob for n, o in para]),
        n_neighbours=n_neigh,
        n_others=len(other),
        locality=_fraction(kept_neigh + kept_other),
        locality_neighbours=_fraction(kept_neigh),
        locality_others=_fraction(kept_other),
        neighbourhood_score=_fraction([own.logprob > new_obj.logprob for _, own, new_obj in neigh]),
    )
