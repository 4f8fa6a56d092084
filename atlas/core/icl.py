"""In-context learning: circuits of the same facts with k demonstrations in the prompt and without.

Demonstrations are k other facts of the same relation (seeded), each written with the relation's template
and its object, one per line, before the query prompt::

    The capital of France is the city of Paris.
    The capital of Japan is the city of Tokyo.
    The capital of Italy is the city of

The demonstrations are the same for every query fact (and never a query fact), so clean and corrupt ICL
prompts differ only in the query subject, as in zero-shot discovery. The facts used are those whose object
the model ranks in its top 10 with the demonstrations (they are what ICL circuits explain; `known_only`),
capped at `max_facts`. Both circuits are node-level: the top-n heads and MLPs by EAP or EAP-IG node score
(the gradient taken at each head's own output). ICL prompts are several times longer than zero-shot ones and
edge scores cost several times more per token; the comparison is by heads anyway.

The paper's Table 2 check: the object's probability (whole object, teacher-forced; mean over facts) on the
ICL prompts as they are, with the heads found only in the ICL circuit ablated, and with as many random heads
ablated (drawn from all the other heads, seeded, averaged over `n_random` draws). Ablation replaces a head's
output at every position by its mean over the batch's tokens (or by zeros).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from atlas.core.attribution import ablated_outputs, edge_scores, graph_of
from atlas.core.circuit import Circuit, node_circuit, top_n_nodes
from atlas.core.evaluation import known_mask
from atlas.core.intervention import patched_logits
from atlas.core.metrics import object_logprob
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch, Pair, make_batches, make_pairs, tokenize_facts
from atlas.core.readout import readout_batch, readout_logits
from atlas.core.roles import circuit_heads
from atlas.spec.analyses import HeadAblation
from atlas.spec.analyses import ICLParams as ICLParams  # re-exported
from atlas.spec.corpus import Fact, Relation
from atlas.spec.json_safe import finite


@dataclass
class ICLResult:
    model: str
    relation: str
    params: ICLParams
    demonstrations: list[str]
    n_facts: int
    hit_zero_shot: float  # Hit@10 of the same facts without demonstrations
    zero_shot_heads: list[str] = field(default_factory=list)
    icl_heads: list[str] = field(default_factory=list)
    icl_only_heads: list[str] = field(default_factory=list)
    prob_zero_shot: float = float("nan")
    prob_original: float = float("nan")  # Table 2: the ICL prompt as it is
    prob_icl_ablated: float = float("nan")  # ... with the ICL-only heads ablated
    prob_random_ablated: float = float("nan")  # ... with as many random heads ablated (mean over draws)
    random_draws: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return finite(asdict(self))


def demonstration_text(relation: Relation, demos: Sequence[Fact], template: str | int | None = None) -> str:
    """The demonstrations, one completed prompt per line, each ending with '.' and a newline."""
    return "".join(f"{relation.prompt(d.subject, template)} {d.object}.\n" for d in demos)


def icl_template(relation: Relation, demos: Sequence[Fact], template: str | int | None = None) -> str:
    """A template (one `{}`, for the query subject) with the demonstrations in front."""
    return demonstration_text(relation, demos, template) + relation.template(template)


def choose_demonstrations(relation: Relation, k: int, seed: int = 0) -> tuple[list[Fact], list[Fact]]:
    """k demonstration facts (with distinct objects where the relation has enough) and the other facts,
    both in a seeded order."""
    facts = list(relation.facts)
    random.Random(seed).shuffle(facts)
    demos: list[Fact] = []
    for fact in facts:
        if len(demos) < k and fact.object not in {d.object for d in demos}:
            demos.append(fact)
    for fact in facts:  # too few distinct objects: fill up with repeats
        if len(demos) < k and fact not in demos:
            demos.append(fact)
    return demos, [f for f in facts if f not in demos]


def _aligned_pairs(
    model: LoadedModel, relation: Relation, facts: Sequence[Fact], templates: tuple[str, str], seed: int
) -> tuple[list[Pair], list[Pair]]:
    """Pairs of the same facts (and corrupt partners) under the zero-shot and the ICL template."""
    sides = []
    for template in templates:
        tokenized = tokenize_facts(relation, facts, model.encode, model.encode_continuation, template)
        sides.append({(p.fact, p.corrupt): p for p in make_pairs(tokenized, tokenized, seed=seed).pairs})
    zero_shot, icl = sides
    common = [key for key in zero_shot if key in icl]  # the boundary token may differ in rare cases
    return [zero_shot[key] for key in common], [icl[key] for key in common]


def _circuit(model: LoadedModel, batches: list[Batch], params: ICLParams) -> Circuit:
    scores = edge_scores(
        model, batches, object_logprob, method=params.method, steps=params.ig_steps, level="node"
    )
    return top_n_nodes(graph_of(model), scores, params.top_n)


@torch.no_grad()
def mean_object_probs(
    model: LoadedModel,
    batches: Sequence[Batch],
    head_sets: Sequence[Sequence[tuple[int, int]] | None],
    ablation: HeadAblation = "mean",
) -> list[float]:
    """For each set of (layer, head), the mean whole-object probability over the batches' facts with those
    heads' outputs ablated (None: the model as it is). Ablated values are computed once per batch."""
    graph = graph_of(model)
    sums = [0.0] * len(head_sets)
    n = 0
    for batch in batches:
        batch = batch.to(model.device)
        ablated = None
        for i, heads in enumerate(head_sets):
            if heads is None:
                logits = readout_logits(model, batch.clean, batch)
            else:
                if ablated is None:
                    ablated = ablated_outputs(model, graph, batch, ablation)
                kept = torch.ones(graph.n_writers, dtype=torch.bool)
                for layer, head in heads:
                    kept[graph.head_writer(layer, head)] = False
                edges = node_circuit(graph, kept).edges
                logits = patched_logits(model, graph, batch, ablated, edges[None], "node")
            sums[i] += float(object_logprob(logits, readout_batch(batch)).exp().sum())
        n += batch.size
    return [total / n if n else float("nan") for total in sums]


def icl_analysis(model: LoadedModel, relation: Relation, params: ICLParams | None = None) -> ICLResult:
    """Zero-shot vs k-shot circuits of a relation's facts, and the Table 2 ablation check."""
    params = params or ICLParams()
    params.validate()
    demos, queries = choose_demonstrations(relation, params.k, params.seed)
    base = relation.template(params.template)
    shot = icl_template(relation, demos, params.template)
    zs_pairs, icl_pairs = _aligned_pairs(model, relation, queries, (base, shot), params.seed)
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    keep: list[int] = []  # indices of facts known with demonstrations, until max_facts
    for start in range(0, len(icl_pairs), params.batch_size):
        batch = make_batches(icl_pairs[start : start + params.batch_size], params.batch_size, pad)[0]
        hits = known_mask(model, batch) if params.known_only else [True] * batch.size
        known = {pair for pair, hit in zip(batch.pairs, hits, strict=True) if hit}
        keep += [i for i in range(start, start + batch.size) if icl_pairs[i] in known]
        if len(keep) >= params.max_facts:
            break
    keep = keep[: params.max_facts]
    result = ICLResult(
        model=model.name,
        relation=relation.name,
        params=params,
        demonstrations=[f"{d.subject} -> {d.object}" for d in demos],
        n_facts=len(keep),
        hit_zero_shot=float("nan"),
    )
    if not keep:
        return result
    zs_batches = make_batches([zs_pairs[i] for i in keep], params.batch_size, pad)
    icl_batches = make_batches([icl_pairs[i] for i in keep], params.batch_size, pad)
    result.hit_zero_shot = statistics.fmean(hit for b in zs_batches for hit in known_mask(model, b))
    zero_shot = circuit_heads(_circuit(model, zs_batches, params).nodes)
    icl = circuit_heads(_circuit(model, icl_batches, params).nodes)
    only = [h for h in icl if h not in set(zero_shot)]
    result.zero_shot_heads = [f"a{layer}.h{head}" for layer, head in zero_shot]
    result.icl_heads = [f"a{layer}.h{head}" for layer, head in icl]
    result.icl_only_heads = [f"a{layer}.h{head}" for layer, head in only]
    others = [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    others = [h for h in others if h not in only]
    rng = random.Random(params.seed)
    draws = [rng.sample(others, min(len(only), len(others))) for _ in range(params.n_random)]
    result.prob_zero_shot = mean_object_probs(model, zs_batches, [None])[0]
    probs = mean_object_probs(model, icl_batches, [None, only, *draws], params.ablation)
    result.prob_original, result.prob_icl_ablated, result.random_draws = probs[0], probs[1], probs[2:]
    result.prob_random_ablated = statistics.fmean(result.random_draws)
    return result
