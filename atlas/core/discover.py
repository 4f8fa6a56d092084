"""One relation's knowledge circuit, start to end: facts -> pairs -> scores -> circuit -> evaluation."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from atlas.core.attribution import edge_scores, graph_of
from atlas.core.circuit import (
    DEFAULT_TOP_N,
    Circuit,
    random_circuit,
    random_node_circuit,
    threshold,
    top_n,
    top_n_nodes,
)
from atlas.core.corpus import Fact, Relation
from atlas.core.evaluation import (
    FaithfulnessCurve,
    SplitEvaluation,
    evaluate_split,
    faithfulness_curve,
    known_mask,
)
from atlas.core.graph import Graph
from atlas.core.metrics import get_metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Pair, make_batches, make_pairs, tokenize_facts
from atlas.core.params import DEFAULT_TOP_N_NODES as DEFAULT_TOP_N_NODES  # re-exported
from atlas.core.params import DiscoveryError as DiscoveryError
from atlas.core.params import DiscoveryParams as DiscoveryParams
from atlas.core.params import Level
from atlas.core.roles import HeadRoles, relation_head_roles


@dataclass
class FactCounts:
    total: int
    unpaired: int  # no same-length subject with another object: cannot be scored
    checked: int  # paired facts run through the model (in seeded order, until enough are known)
    known: int  # of those, with the object in the model's top 10
    discovery: int
    heldout: int


@dataclass
class DiscoveryResult:
    model: str
    relation: str
    category: str
    params: DiscoveryParams
    counts: FactCounts
    circuit: Circuit
    random: Circuit
    scores: torch.Tensor  # [n_writers, n_readers], averaged over discovery facts
    discovery: SplitEvaluation
    heldout: SplitEvaluation | None
    curve: FaithfulnessCurve | None
    unpaired_facts: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    roles: HeadRoles | None = None  # of the circuit's heads, on the discovery prompts

    def summary(self) -> dict[str, Any]:
        """The Table-1-style record printed by `atlas discover --json`."""
        d = self.discovery
        return {
            "model": self.model,
            "relation": self.relation,
            "category": self.category,
            "method": self.params.method,
            "level": self.circuit.level,
            "ig_steps": self.params.ig_steps if self.params.method == "eap-ig" else None,
            "metric": self.params.metric,
            "n_facts": d.n_facts,
            "facts": asdict(self.counts),
            "n_nodes": self.circuit.n_nodes,
            "n_edges": self.circuit.n_edges,
            "n_random_edges": self.random.n_edges,
            "hit_at_10": {"original": d.hit_original, "circuit": d.hit_circuit, "random": d.hit_random},
            "faithfulness": d.faithfulness,
            "faithfulness_random": d.faithfulness_random,
            "heldout": None
            if self.heldout is None
            else {
                "n_facts": self.heldout.n_facts,
                "hit_at_10": {
                    "original": self.heldout.hit_original,
                    "circuit": self.heldout.hit_circuit,
                    "random": self.heldout.hit_random,
                },
                "faithfulness": self.heldout.faithfulness,
            },
            "curve": None
            if self.curve is None
            else {"area": self.curve.area, "points": [asdict(p) for p in self.curve.points]},
            "unpaired_facts": self.unpaired_facts,
            "seconds": self.seconds,
            "roles": None
            if self.roles is None
            else {"thresholds": asdict(self.roles.thresholds), "counts": self.roles.counts()},
            "heads": [asdict(head) for head in self.roles.heads] if self.roles is not None else [],
        }


def discover(
    model: LoadedModel,
    relation: Relation,
    params: DiscoveryParams,
    progress: Callable[[int, int], None] | None = None,
) -> DiscoveryResult:
    """Find and evaluate `relation`'s circuit in `model`. `progress(done, total)` counts facts scored."""
    level = resolve_level(model, params)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    tokenized = tokenize_facts(
        relation, relation.facts, model.encode, model.encode_continuation, params.template
    )
    pairing = make_pairs(tokenized, tokenized, seed=params.seed)
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    kept, checked, known = _filter_known(model, pairing.pairs, params, pad)
    seconds["filter"] = time.perf_counter() - clock
    if not kept:
        raise DiscoveryError(
            f"no fact of relation {relation.name!r} survives filtering in {model.name!r}: "
            f"{len(relation.facts)} facts, {len(pairing.pairs)} paired, 0 with the object in the top 10"
        )
    discovery_pairs, heldout_pairs = _split(kept, params)
    counts = FactCounts(
        total=len(relation.facts),
        unpaired=len(pairing.unpaired),
        checked=checked,
        known=known,
        discovery=len(discovery_pairs),
        heldout=len(heldout_pairs),
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
    scores = edge_scores(
        model,
        discovery_batches,
        metric,
        method=params.method,
        steps=params.ig_steps,
        ablation=params.ablation,
        level=level,
        progress=advance,
    )
    seconds["attribution"] = time.perf_counter() - clock
    graph = graph_of(model)
    circuit = select_circuit(graph, scores, params, level)
    random = (
        random_node_circuit(graph, int(circuit.kept_writers[1:].sum()), seed=params.seed)
        if level == "node"
        else random_circuit(graph, circuit.n_edges, seed=params.seed)
    )
    clock = time.perf_counter()
    facts = [pair.fact for pair in discovery_pairs]
    roles = relation_head_roles(model, relation, circuit.nodes, facts=facts, template=params.template)
    seconds["roles"] = time.perf_counter() - clock
    clock = time.perf_counter()
    evaluation = evaluate_split(model, graph, discovery_batches, circuit, random, metric, params.ablation)
    heldout = None
    if heldout_pairs:
        heldout_batches = make_batches(heldout_pairs, params.batch_size, pad)
        heldout = evaluate_split(model, graph, heldout_batches, circuit, random, metric, params.ablation)
    curve = (
        faithfulness_curve(model, graph, discovery_batches, scores, metric, params.ablation)
        if params.curve
        else None
    )
    seconds["evaluation"] = time.perf_counter() - clock
    return DiscoveryResult(
        model=model.name,
        relation=relation.name,
        category=relation.category,
        params=params,
        counts=counts,
        circuit=circuit,
        random=random,
        scores=scores.cpu(),
        discovery=evaluation,
        heldout=heldout,
        curve=curve,
        unpaired_facts=[f"{fact.subject} -> {fact.object}" for fact in pairing.unpaired],
        seconds=seconds,
        roles=roles,
    )


def resolve_level(model: LoadedModel, params: DiscoveryParams) -> Level:
    """The circuit granularity asked for, or the model's own (edge where sound); validates the params."""
    params.validate()
    level: Level = params.level or ("edge" if model.edge_level else "node")
    if level == "edge" and not model.edge_level:
        raise DiscoveryError(
            f"model {model.name!r} normalizes per-head outputs before the residual add, so edge circuits "
            "are not sound for it; use node level (--level node)"
        )
    if level == "node" and params.threshold is not None:
        raise DiscoveryError("a score threshold selects edges; node-level circuits take --top-n")
    return level


def select_circuit(graph: Graph, scores: torch.Tensor, params: DiscoveryParams, level: Level) -> Circuit:
    """The circuit the parameters select from a score matrix: top-n nodes, or a threshold or top-n edges."""
    if level == "node":
        return top_n_nodes(graph, scores, params.top_n or DEFAULT_TOP_N_NODES)
    if params.threshold is not None:
        return threshold(graph, scores, params.threshold)
    return top_n(graph, scores, params.top_n or DEFAULT_TOP_N)


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
    scored alone, and cut as `params` say. Evaluation is left to the caller."""
    level = resolve_level(model, params)
    tokenized = tokenize_facts(relation, [fact], model.encode, model.encode_continuation, params.template)
    partners = tokenize_facts(
        relation, relation.facts, model.encode, model.encode_continuation, params.template
    )
    pairing = make_pairs(tokenized, partners, seed=params.seed)
    if not pairing.pairs:
        raise DiscoveryError(
            f"no fact of relation {relation.name!r} can corrupt {fact.subject!r} -> {fact.object!r}: "
            "none has a prompt of the same length in tokens and another object"
        )
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    batches = make_batches(pairing.pairs, 1, pad)
    scores = edge_scores(
        model,
        batches,
        get_metric(params.metric),
        method=params.method,
        steps=params.ig_steps,
        ablation=params.ablation,
        level=level,
    )
    circuit = select_circuit(graph_of(model), scores, params, level)
    return FactCircuit(fact, pairing.pairs[0].corrupt, level, circuit, scores.cpu())


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
