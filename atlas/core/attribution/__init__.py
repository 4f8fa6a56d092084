"""Edge attribution: scores for every edge of the graph (or every node), batched over facts.

An edge's score is `(a_ablated[writer] - a_clean[writer]) . d metric / d input[reader]`, summed over
positions and kept per fact: the first-order estimate of how the metric changes when that one edge carries
the ablated value (Syed et al.; Hanna et al.). The methods differ in where the gradient is taken; each is one
module here, named by its entry in `atlas.spec.methods` (the registry the CLI, API and validation use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import cache

import torch

from atlas.core.attribution.base import Scorer, ablated_outputs, micro_batches, writer_outputs
from atlas.core.graph import Graph
from atlas.core.memory import MemoryBudget, attribution_fact_bytes, discovery_budget, facts_per_pass
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.spec.methods import method_spec
from atlas.spec.params import ABLATIONS, LEVELS

Progress = Callable[[int], None]

__all__ = ["ablated_outputs", "edge_scores", "fact_scores", "graph_of", "scorer", "writer_outputs"]


def graph_of(model: LoadedModel) -> Graph:
    return Graph(model.n_layers, model.n_heads)


@cache
def scorer(method: str) -> Scorer:
    """The implementation of a registered method (atlas.spec.methods), imported on first use."""
    module, _, name = method_spec(method).implementation.partition(":")
    implementation: Scorer = getattr(importlib.import_module(module), name)()
    return implementation


def fact_scores(
    model: LoadedModel,
    batches: Sequence[Batch],
    metric: Metric,
    *,
    method: str = "eap-ig",
    steps: int = 5,
    ablation: str = "corrupt",
    level: str = "edge",
    progress: Progress | None = None,
    budget: MemoryBudget | None = None,
) -> torch.Tensor:
    """Each fact's scores, in batch order: `[n_facts, n_writers, n_readers]` (zero where no edge exists),
    or at node level `[n_facts, n_writers]` (the gradient at each writer's output; the input's score is
    zero, it is never ablated).

    `budget` (None: ATLAS_MAX_MEMORY_MB's, if set): each batch runs in passes of as many facts as its
    estimated peak allows (atlas.core.memory); a fact's scores do not depend on the pass it is in."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from {', '.join(LEVELS)}")
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    implementation = scorer(method)
    graph = graph_of(model)
    budget = budget or discovery_budget(model)
    parts = []
    for batch in batches:
        batch = batch.to(model.device)
        size = batch.size
        if budget is not None:
            need = attribution_fact_bytes(
                model, graph, batch.clean.shape[1], batch.target_pos.shape[1], level, method
            )
            size = facts_per_pass(budget, need, "attribution")
        for part in micro_batches(model, graph, batch, size, ablation):
            scores = implementation.batch_scores(model, graph, part, metric, steps, ablation, level)
            parts.append(scores.cpu())
            del scores  # the pass's buffers go before the next one's
            if progress is not None:
                progress(part.size)
    shape = (graph.n_writers, graph.n_readers) if level == "edge" else (graph.n_writers,)
    scores = torch.cat(parts) if parts else torch.zeros(0, *shape)
    if level == "node":
        scores[:, 0] = 0.0
        return scores
    return scores * graph.valid_edges


def edge_scores(
    model: LoadedModel,
    batches: Sequence[Batch],
    metric: Metric,
    *,
    method: str = "eap-ig",
    steps: int = 5,
    ablation: str = "corrupt",
    level: str = "edge",
    progress: Progress | None = None,
) -> torch.Tensor:
    """Scores averaged over all facts: `[n_writers, n_readers]`, or `[n_writers]` at node level."""
    per_fact = fact_scores(
        model, batches, metric, method=method, steps=steps, ablation=ablation, level=level, progress=progress
    )
    if per_fact.shape[0] == 0:
        return per_fact.sum(0)
    return per_fact.mean(0)
