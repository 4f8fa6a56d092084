"""Hallucinations: circuits of the wrong answers a model gives, against circuits of the facts it gets right.

A fact is *correct* when the model's top-1 next token after the prompt is the object's first token, and
*wrong* when it is another token (the paper's hallucination cases: the model confidently outputs a wrong
answer; Hit@10, used to filter facts for discovery, would count many of these as known). For the wrong facts
the circuit is discovered with the model's own wrong token as the target (the metric is its log-probability),
for the correct facts with the true object; both with the relation's usual corrupt prompts (another subject).

The components that push the wrong answer are ranked two ways: by attribution (`push`: the estimated drop
in the wrong token's log-probability when the component carries its corrupt value; a writer's node score
is the sum of its outgoing edge scores, and `push` is minus that) and by the logit lens (the median rank of
the wrong token in the component's own output at the last position).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from atlas.core.attribution import edge_scores, graph_of
from atlas.core.circuit import Circuit, top_n
from atlas.core.component_lens import LensSummary, lens_summary
from atlas.core.metrics import object_logprob
from atlas.core.models import LoadedModel
from atlas.core.pairs import TokenizedFact, make_batches, make_pairs, tokenize_facts
from atlas.spec.analyses import HallucinationParams as HallucinationParams  # re-exported
from atlas.spec.corpus import Fact, Relation
from atlas.spec.json_safe import finite


@dataclass(frozen=True)
class FactOutcome:
    subject: str
    object: str
    prediction: str  # the model's top-1 next token, decoded
    prediction_id: int
    object_rank: int  # 1-based rank of the object's first token
    correct: bool


@dataclass(frozen=True)
class Pusher:
    """A component of the wrong answer's circuit and how it pushes the wrong token."""

    name: str
    push: float  # minus the node's attribution score toward the wrong token's log-probability
    lens_median_rank: float | None  # of the wrong token in this component's output (None: not a head/MLP)
    in_correct_circuit: bool


@dataclass
class HallucinationResult:
    model: str
    relation: str
    params: HallucinationParams
    outcomes: list[FactOutcome]
    wrong_nodes: list[str] = field(default_factory=list)
    correct_nodes: list[str] = field(default_factory=list)
    wrong_edges: int = 0
    correct_edges: int = 0
    edge_jaccard: float = float("nan")
    pushers: list[Pusher] = field(default_factory=list)  # every head/MLP of the wrong circuit, by push
    by_lens: list[str] = field(default_factory=list)  # top_k of them by the wrong token's lens rank
    wrong_lens: LensSummary | None = None

    @property
    def wrong(self) -> list[FactOutcome]:
        return [o for o in self.outcomes if not o.correct]

    @property
    def correct(self) -> list[FactOutcome]:
        return [o for o in self.outcomes if o.correct]

    @property
    def shared_nodes(self) -> list[str]:
        other = set(self.correct_nodes)
        return [n for n in self.wrong_nodes if n in other]

    @property
    def only_wrong(self) -> list[str]:
        other = set(self.correct_nodes)
        return [n for n in self.wrong_nodes if n not in other]

    @property
    def only_correct(self) -> list[str]:
        other = set(self.wrong_nodes)
        return [n for n in self.correct_nodes if n not in other]

    @property
    def node_jaccard(self) -> float:
        if not self.wrong_nodes or not self.correct_nodes:
            return float("nan")
        return len(self.shared_nodes) / len(set(self.wrong_nodes) | set(self.correct_nodes))

    def to_dict(self) -> dict[str, Any]:
        top = self.pushers[: self.params.top_k]
        return finite(
            {
                "model": self.model,
                "relation": self.relation,
                "params": asdict(self.params),
                "n_checked": len(self.outcomes),
                "n_correct": len(self.correct),
                "n_wrong": len(self.wrong),
                "outcomes": [asdict(o) for o in self.outcomes],
                "wrong_circuit": {"nodes": self.wrong_nodes, "n_edges": self.wrong_edges},
                "correct_circuit": {"nodes": self.correct_nodes, "n_edges": self.correct_edges},
                "shared_nodes": self.shared_nodes,
                "only_wrong": self.only_wrong,
                "only_correct": self.only_correct,
                "node_jaccard": self.node_jaccard,
                "edge_jaccard": self.edge_jaccard,
                "pushers": [asdict(p) for p in top],
                "by_lens": self.by_lens,
                "wrong_lens": None if self.wrong_lens is None else self.wrong_lens.to_dict(),
            }
        )


@torch.no_grad()
def fact_outcomes(
    model: LoadedModel, tokenized: Sequence[TokenizedFact], batch_size: int = 16
) -> list[FactOutcome]:
    """Whether the model's top-1 next token is each fact's object (first token), and what it is instead."""
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    outcomes: list[FactOutcome] = []
    for start in range(0, len(tokenized), batch_size):
        chunk = tokenized[start : start + batch_size]
        width = max(len(t.prompt_ids) for t in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        for row, item in enumerate(chunk):
            tokens[row, : len(item.prompt_ids)] = torch.tensor(item.prompt_ids)
        logits = model.bridge(tokens.to(model.device), return_type="logits")
        last = torch.tensor([len(t.prompt_ids) - 1 for t in chunk], device=logits.device)
        final = logits[torch.arange(len(chunk), device=logits.device), last]  # [batch, vocab]
        top = final.argmax(-1).tolist()
        for row, item in enumerate(chunk):
            target = final[row, item.object_ids[0]]
            rank = int((final[row] > target).sum()) + 1
            outcomes.append(
                FactOutcome(
                    subject=item.fact.subject,
                    object=item.fact.object,
                    prediction=model.tokenizer.decode([top[row]]),
                    prediction_id=int(top[row]),
                    object_rank=rank,
                    correct=rank == 1,
                )
            )
    return outcomes


def _circuit(
    model: LoadedModel,
    items: Sequence[TokenizedFact],
    partners: Sequence[TokenizedFact],
    params: HallucinationParams,
) -> tuple[Circuit, torch.Tensor] | None:
    """The top-n edge circuit of the facts' (possibly overridden) object tokens, and its edge scores."""
    pairs = make_pairs(items, partners, seed=params.seed).pairs
    if not pairs:
        return None
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    batches = make_batches(pairs, params.batch_size, pad)
    scores = edge_scores(
        model,
        batches,
        object_logprob,
        method=params.method,
        steps=params.ig_steps,
        ablation=params.ablation,
    ).cpu()
    return top_n(graph_of(model), scores, params.top_n), scores


def analyze_hallucinations(
    model: LoadedModel, relation: Relation, params: HallucinationParams | None = None
) -> HallucinationResult:
    """Split a relation's facts into correct and wrong, and compare the wrong answers' circuit with the
    correct facts' circuit. Either side can be empty (then its circuit is empty too)."""
    params = params or HallucinationParams()
    params.validate()
    facts = list(relation.facts)
    random.Random(params.seed).shuffle(facts)
    tokenized = tokenize_facts(
        relation, facts[: params.max_checked], model.encode, model.encode_continuation, params.template
    )
    outcomes = fact_outcomes(model, tokenized)
    result = HallucinationResult(model.name, relation.name, params, outcomes)
    wrong_items = [
        # The wrong token becomes the target: the metric scores its log-probability.
        TokenizedFact(
            Fact(t.fact.subject, o.prediction.strip() or o.prediction), t.prompt_ids, (o.prediction_id,)
        )
        for t, o in zip(tokenized, outcomes, strict=True)
        if not o.correct
    ][: params.max_facts]
    correct_items = [t for t, o in zip(tokenized, outcomes, strict=True) if o.correct][: params.max_facts]
    wrong = _circuit(model, wrong_items, tokenized, params) if wrong_items else None
    correct = _circuit(model, correct_items, tokenized, params) if correct_items else None
    if correct is not None:
        result.correct_nodes, result.correct_edges = correct[0].nodes, correct[0].n_edges
    if wrong is None:
        return result
    circuit, scores = wrong
    result.wrong_nodes, result.wrong_edges = circuit.nodes, circuit.n_edges
    if correct is not None:
        union = int((circuit.edges | correct[0].edges).sum())
        result.edge_jaccard = int((circuit.edges & correct[0].edges).sum()) / union if union else float("nan")
    components = [n for n in circuit.nodes if n not in ("input", "logits")]
    lens = lens_summary(model, [(t.prompt_ids, t.object_ids[0]) for t in wrong_items], components)
    result.wrong_lens = lens
    lens_rank = {c.name: c.median_rank for c in lens.components}
    graph = graph_of(model)
    node_scores = scores.sum(1)  # a writer's node score: the sum of its outgoing edges' scores
    correct_set = set(result.correct_nodes)
    result.pushers = sorted(
        (
            Pusher(
                name,
                -float(node_scores[graph.writer_names.index(name)]),
                lens_rank.get(name),
                name in correct_set,
            )
            for name in components
        ),
        key=lambda p: -p.push,
    )
    result.by_lens = sorted(lens_rank, key=lambda name: lens_rank[name])[: params.top_k]
    return result
