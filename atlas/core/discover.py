"""One relation's knowledge circuit, start to end: facts -> pairs -> scores -> circuit -> evaluation."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from atlas.core.attribution import fact_scores, graph_of
from atlas.core.circuit import Circuit, random_circuit, random_node_circuit
from atlas.core.evaluation import (
    Evaluator,
    FaithfulnessCurve,
    SplitEvaluation,
    curve_sizes,
    faithfulness_curve,
    known_mask,
    score_order,
)
from atlas.core.graph import Graph
from atlas.core.memory import discovery_budget
from atlas.core.metrics import get_metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Pair, make_batches, make_pairs, tokenize_facts
from atlas.core.roles import HeadRoles, relation_head_roles
from atlas.core.sizing import Folds, SizeChoice, search_size
from atlas.core.stability import Stability, bootstrap_stability, select_from_scores
from atlas.spec.corpus import Fact, Relation
from atlas.spec.params import (
    DEFAULT_TOP_N_NODES as DEFAULT_TOP_N_NODES,  # re-exported
)
from atlas.spec.params import (
    TEMPLATE_AUTO,
    DiscoveryError,
    DiscoveryParams,
    Level,
    max_edges_for,
    max_nodes_for,
)

__all__ = ["DiscoveryError", "DiscoveryParams", "DiscoveryResult", "discover", "fact_circuit"]


@dataclass
class FactCounts:
    total: int
    unpaired: int  # no same-length subject with another object: cannot be scored
    checked: int  # paired facts run through the model (in seeded order, until enough are known)
    known: int  # of those, with the object in the model's top 10
    discovery: int
    heldout: int
    objects: int = 0  # the relation's answer set: distinct objects among its facts


@dataclass
class TemplateChoice:
    """Which template a run used, and (for `template auto`) how many facts each candidate had known."""

    index: int | None  # into zero-shot + plain templates; None for a template given as a string
    template: str
    known: dict[int, int] = field(default_factory=dict)  # candidate index -> facts known under it
    checked: dict[int, int] = field(default_factory=dict)  # candidate index -> paired facts checked


@dataclass
class DiscoveryResult:
    model: str
    relation: str
    category: str
    params: DiscoveryParams
    counts: FactCounts
    circuit: Circuit
    random: Circuit
    scores: torch.Tensor  # [n_writers, n_readers] (node level: [n_writers]), averaged over discovery facts
    discovery: SplitEvaluation
    heldout: SplitEvaluation | None
    curve: FaithfulnessCurve | None
    unpaired_facts: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    roles: HeadRoles | None = None  # of the circuit's heads, on the discovery prompts
    size: SizeChoice | None = None  # how the size was searched (selection "faithfulness")
    template: TemplateChoice | None = None
    stability: Stability | None = None  # bootstrap over the discovery facts (None: --bootstrap 0)
    circuits_evaluated: int = 0  # distinct circuits run, discovery and held-out facts together

    @property
    def target_met(self) -> bool | None:
        return None if self.size is None else self.size.target_met

    def summary(self) -> dict[str, Any]:
        """The record printed by `atlas discover --json`."""
        d, h = self.discovery, self.heldout
        graph = self.circuit.graph
        level = self.circuit.level
        total = graph.n_edges if level == "edge" else graph.n_components
        size = self.circuit.n_edges if level == "edge" else self.circuit.n_components
        return {
            "model": self.model,
            "relation": self.relation,
            "category": self.category,
            "method": self.params.method,
            "level": level,
            "ig_steps": self.params.steps if self.params.steps > 1 else None,
            "metric": self.params.metric,
            "selection": self.params.selection,
            "target_faithfulness": self.params.target if self.size is not None else None,
            "target_met": self.target_met,
            "size": size,
            "size_percent": 100 * size / total if total else None,
            "n_facts": d.n_facts,
            "facts": asdict(self.counts),
            "answer_set": self.counts.objects,
            "n_nodes": self.circuit.n_nodes,
            "n_edges": self.circuit.n_edges,
            "n_random_edges": self.random.n_edges,
            "faithfulness": d.faithfulness,
            "faithfulness_random": d.faithfulness_random,
            "hit_at_10": {"original": d.hit_original, "circuit": d.hit_circuit, "random": d.hit_random},
            "hit_at_10_informative": d.hit_informative,
            "top1": {"original": d.top1_original, "circuit": d.top1_circuit, "random": d.top1_random},
            "heldout": None if h is None else _split_summary(h),
            "search": None if self.size is None else asdict(self.size),
            "template": None if self.template is None else asdict(self.template),
            "curve": None
            if self.curve is None
            else {"area": self.curve.area, "points": [asdict(p) for p in self.curve.points]},
            "stability": None if self.stability is None else self.stability.summary(),
            "unpaired_facts": self.unpaired_facts,
            "seconds": self.seconds,
            "circuits_evaluated": self.circuits_evaluated,
            "roles": None
            if self.roles is None
            else {"thresholds": asdict(self.roles.thresholds), "counts": self.roles.counts()},
            "heads": [asdict(head) for head in self.roles.heads] if self.roles is not None else [],
        }


def _split_summary(split: SplitEvaluation) -> dict[str, Any]:
    return {
        "n_facts": split.n_facts,
        "faithfulness": split.faithfulness,
        "faithfulness_random": split.faithfulness_random,
        "hit_at_10": {
            "original": split.hit_original,
            "circuit": split.hit_circuit,
            "random": split.hit_random,
        },
        "hit_at_10_informative": split.hit_informative,
        "top1": {"original": split.top1_original, "circuit": split.top1_circuit, "random": split.top1_random},
    }


def discover(
    model: LoadedModel,
    relation: Relation,
    params: DiscoveryParams,
    progress: Callable[[int, int], None] | None = None,
    max_memory: int | None = None,
) -> DiscoveryResult:
    """Find and evaluate `relation`'s circuit in `model`. `progress(done, total)` counts facts scored.
    `max_memory`: the process's peak in bytes that attribution and evaluation keep to (None:
    ATLAS_MAX_MEMORY_MB, if set); it changes how facts are grouped into passes, not the result."""
    level = resolve_level(model, params)
    budget = discovery_budget(model, max_memory)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    pad = pad_id(model)
    template = choose_template(model, relation, params, pad)
    tokenized = tokenize_facts(
        relation,
        relation.facts,
        model.encode,
        model.encode_continuation,
        template.template,
        model.context_length,
    )
    pairing = make_pairs(tokenized, tokenized, seed=params.seed)
    kept, checked, known = _filter_known(model, pairing.pairs, params, pad)
    seconds["filter"] = time.perf_counter() - clock
    if not kept:
        raise DiscoveryError(
            f"no fact of relation {relation.name!r} survives filtering in {model.name!r} under template "
            f"{template.template!r}: {len(relation.facts)} facts, {len(pairing.pairs)} paired, 0 with the "
            "object in the top 10 (try --template auto, or another template)"
        )
    discovery_pairs, heldout_pairs = _split(kept, params)
    counts = FactCounts(
        total=len(relation.facts),
        unpaired=len(pairing.unpaired),
        checked=checked,
        known=known,
        discovery=len(discovery_pairs),
        heldout=len(heldout_pairs),
        objects=len({fact.object for fact in relation.facts}),
    )
    metric = get_metric(params.metric)
    discovery_batches = make_batches(discovery_pairs, params.batch_size, pad)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(discovery_pairs))

    clock = time.perf_counter()
    per_fact = fact_scores(
        model,
        discovery_batches,
        metric,
        method=params.method,
        steps=params.steps,
        ablation=params.ablation,
        level=level,
        progress=advance,
        budget=budget,
    )
    scores = per_fact.mean(0)
    seconds["attribution"] = time.perf_counter() - clock
    graph = graph_of(model)
    clock = time.perf_counter()
    evaluator = Evaluator(model, graph, discovery_batches, metric, params.ablation, level, budget=budget)
    size: SizeChoice | None = None
    if params.selection == "faithfulness":
        cap = (
            max_edges_for(graph.n_edges, params.max_edges)
            if level == "edge"
            else max_nodes_for(graph.n_components, params.max_nodes)
        )
        size, edges = search_size(
            evaluator,
            score_order(graph, scores, params.ranking),
            params.target,
            cap,
            curve_sizes(graph, level) if params.curve else (),
            confidence=params.bound_confidence,
            folds=size_folds(graph, per_fact, params),
        )
        circuit = Circuit(graph, edges, level=level)
    else:
        circuit = select_circuit(graph, scores, params, level)
    random = (
        random_node_circuit(graph, circuit.n_components, seed=params.seed)
        if level == "node"
        else random_circuit(graph, circuit.n_edges, seed=params.seed)
    )
    evaluation = evaluator.evaluate(circuit, random)
    curve = faithfulness_curve(evaluator, scores, ranking=params.ranking) if params.curve else None
    heldout = None
    evaluated = evaluator.circuits_run
    if heldout_pairs:
        heldout_batches = make_batches(heldout_pairs, params.batch_size, pad)
        heldout_evaluator = Evaluator(
            model, graph, heldout_batches, metric, params.ablation, level, budget=budget
        )
        heldout = heldout_evaluator.evaluate(circuit, random)
        evaluated += heldout_evaluator.circuits_run
    seconds["evaluation"] = time.perf_counter() - clock
    clock = time.perf_counter()
    stability = None
    if params.bootstrap > 0:
        n_top = size.n_top if size is not None else None
        stability = bootstrap_stability(
            graph,
            per_fact,
            lambda s: select_from_scores(graph, s, params, level, n_top),
            params.bootstrap,
            params.seed,
        )
    seconds["bootstrap"] = time.perf_counter() - clock
    clock = time.perf_counter()
    facts = [pair.fact for pair in discovery_pairs]
    roles = relation_head_roles(model, relation, circuit.nodes, facts=facts, template=template.template)
    seconds["roles"] = time.perf_counter() - clock
    return DiscoveryResult(
        model=model.name,
        relation=relation.name,
        category=relation.category,
        params=params,
        counts=counts,
        circuit=circuit,
        random=random,
        scores=scores,
        discovery=evaluation,
        heldout=heldout,
        curve=curve,
        unpaired_facts=[f"{fact.subject} -> {fact.object}" for fact in pairing.unpaired],
        seconds=seconds,
        roles=roles,
        size=size,
        template=template,
        stability=stability,
        circuits_evaluated=evaluated,
    )


def size_folds(graph: Graph, per_fact: torch.Tensor, params: DiscoveryParams) -> Folds | None:
    """The folds the size search judges sizes over: the discovery facts (per_fact's rows, which are in the
    evaluator's fact order) dealt into `params.folds` seeded folds of at least two facts (fewer folds for
    few facts; none below two), each with the order the other folds' per-fact scores give."""
    n_facts = per_fact.shape[0]
    k = min(params.folds, n_facts // 2)
    if k < 2:
        return None
    shuffled = list(range(n_facts))
    random.Random(params.seed).shuffle(shuffled)
    fold_of = np.zeros(n_facts, dtype=np.int64)
    for j in range(k):
        fold_of[shuffled[j::k]] = j
    orders = [
        score_order(graph, per_fact[torch.from_numpy(fold_of != j)].mean(0), params.ranking) for j in range(k)
    ]
    return Folds(fold_of, orders)


def pad_id(model: LoadedModel) -> int:
    """The token id batches are padded with (padding is never attended to nor scored)."""
    return int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)


def resolve_level(model: LoadedModel, params: DiscoveryParams) -> Level:
    """The circuit granularity asked for, or the model's own (edge where sound); validates the params."""
    params.validate()
    level: Level = params.level or ("edge" if model.edge_level else "node")  # type: ignore[assignment]
    if level == "edge" and not model.edge_level:
        raise DiscoveryError(
            f"model {model.name!r} normalizes per-head outputs before the residual add, so edge circuits "
            "are not sound for it; use node level (--level node)",
            field="level",
        )
    if level == "node" and params.threshold is not None:
        raise DiscoveryError(
            "a score threshold selects edges; node-level circuits take --top-n", field="threshold"
        )
    if level == "node" and params.max_edges is not None:
        raise DiscoveryError(
            "--max-edges caps edge circuits; node-level circuits take --max-nodes", field="max_edges"
        )
    if level == "edge" and params.max_nodes is not None:
        raise DiscoveryError(
            "--max-nodes caps node circuits; edge-level circuits take --max-edges", field="max_nodes"
        )
    return level


def select_circuit(graph: Graph, scores: torch.Tensor, params: DiscoveryParams, level: str) -> Circuit:
    """The circuit a fixed-size rule cuts from a score matrix: top-n nodes, or a threshold or top-n edges."""
    if params.selection == "faithfulness":
        raise DiscoveryError("a circuit sized by faithfulness needs an evaluation: use discover()")
    edges = select_from_scores(graph, scores.detach().cpu().double().numpy(), params, level, None)
    return Circuit(graph, torch.from_numpy(edges), level=level)


def choose_template(
    model: LoadedModel, relation: Relation, params: DiscoveryParams, pad: int
) -> TemplateChoice:
    """The template a run uses. `auto`: of the relation's templates (zero-shot ones first, then the others,
    which LRE lists as alternative wordings), the one under which the model knows the most facts, checked in
    the run's seeded order on up to four times the facts a run needs (ties: the first)."""
    if params.template != TEMPLATE_AUTO:
        index = (
            params.template if isinstance(params.template, int) else (0 if params.template is None else None)
        )
        return TemplateChoice(index, relation.template(params.template))
    candidates = list(range(len(relation.prompt_templates_zs) + len(relation.prompt_templates)))
    budget = 4 * math.ceil(params.max_facts / (1 - params.heldout_fraction))
    choice = TemplateChoice(None, "")
    for index in candidates:
        template = relation.template(index)
        tokenized = tokenize_facts(
            relation, relation.facts, model.encode, model.encode_continuation, template
        )
        pairs = make_pairs(tokenized, tokenized, seed=params.seed).pairs
        order = list(pairs)
        random.Random(params.seed).shuffle(order)
        order = order[:budget]
        known = 0
        for start in range(0, len(order), params.batch_size):
            batch = make_batches(order[start : start + params.batch_size], params.batch_size, pad)[0]
            known += sum(known_mask(model, batch))
        choice.known[index], choice.checked[index] = known, len(order)
    best = max(candidates, key=lambda i: (choice.known[i], -i))
    choice.index, choice.template = best, relation.template(best)
    return choice


@dataclass
class FactCircuit:
    """The circuit of one fact: scored on that fact alone, against a corrupt partner from its relation."""

    fact: Fact
    partner: Fact
    level: Level
    circuit: Circuit
    scores: torch.Tensor  # [n_writers, n_readers] (edge level) or [n_writers] (node level)


def fact_circuit(model: LoadedModel, relation: Relation, fact: Fact, params: DiscoveryParams) -> FactCircuit:
    """The circuit of one fact, whose object may be one the relation does not hold (an edit's new object):
    the fact is paired with another of the relation's facts of the same prompt length and another object,
    scored alone, and cut as `params` say (a fixed size: top-n or a threshold). Evaluation is left to the
    caller."""
    level = resolve_level(model, params)
    template = relation.template(None if params.template == TEMPLATE_AUTO else params.template)
    tokenized = tokenize_facts(
        relation, [fact], model.encode, model.encode_continuation, template, model.context_length
    )
    partners = tokenize_facts(
        relation, relation.facts, model.encode, model.encode_continuation, template, model.context_length
    )
    pairing = make_pairs(tokenized, partners, seed=params.seed)
    if not pairing.pairs:
        raise DiscoveryError(
            f"no fact of relation {relation.name!r} can corrupt {fact.subject!r} -> {fact.object!r}: "
            "none has a prompt of the same length in tokens and another object"
        )
    batches = make_batches(pairing.pairs, 1, pad_id(model))
    scores = fact_scores(
        model,
        batches,
        get_metric(params.metric),
        method=params.method,
        steps=params.steps,
        ablation=params.ablation,
        level=level,
    ).mean(0)
    circuit = select_circuit(graph_of(model), scores, params, level)
    return FactCircuit(fact, pairing.pairs[0].corrupt, level, circuit, scores)


def _filter_known(
    model: LoadedModel, pairs: list[Pair], params: DiscoveryParams, pad: int
) -> tuple[list[Pair], int, int]:
    """Pairs to use (known ones, unless `known_only` is off), in seeded order, and how many were checked
    and known. Stops once discovery and held-out sets can be filled: large relations need not all be run."""
    order = list(pairs)
    random.Random(params.seed).shuffle(order)
    needed = math.ceil(params.max_facts / (1 - params.heldout_fraction))
    kept: list[Pair] = []
    checked = known = 0
    for start in range(0, len(order), params.batch_size):
        chunk = order[start : start + params.batch_size]
        batch = make_batches(chunk, len(chunk), pad)[0]
        hits = known_mask(model, batch)
        checked += len(chunk)
        known += sum(hits)
        kept += [pair for pair, hit in zip(batch.pairs, hits, strict=True) if hit or not params.known_only]
        if len(kept) >= needed:
            break
    return kept[:needed], checked, known


def _split(pairs: list[Pair], params: DiscoveryParams) -> tuple[list[Pair], list[Pair]]:
    """Split (already shuffled) facts into discovery and held-out sets, each capped at max_facts."""
    shuffled = list(pairs)
    n_heldout = int(len(shuffled) * params.heldout_fraction)
    if len(shuffled) - n_heldout < 1:
        n_heldout = len(shuffled) - 1
    discovery, heldout = shuffled[n_heldout:], shuffled[:n_heldout]
    return discovery[: params.max_facts], heldout[: params.max_facts]
