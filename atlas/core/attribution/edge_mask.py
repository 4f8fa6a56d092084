"""EAP-IG refined by a learned mask (Edge Pruning, Bhaskar et al. 2024): where ranking edges by their
attribution alone needs more edges than the cap to reach the target faithfulness, a mask over the edges is
learned on the circuit's own objective, started from that ranking.

The masked run is the circuit's intervention (`atlas.core.intervention`) made continuous: each reader's input
is its input minus `sum_w (1 - z_wr) (out_w - ablated_w)` over its upstream writers, the writers'
outputs taken in the same run; with `z` in {0, 1} it is exactly the circuit run, with `z` = 1 the model. At
node level, each head's or MLP's output becomes `ablated + z (out - ablated)` (`input` is never ablated).

Each gate `z` is a hard-concrete variable (Louizos et al.; as Edge Pruning uses) with a learned location
`log_alpha`. Gates are learned for a pool of edges, the `POOL_FACTOR` x default cap (2% of the edges)
best-ranked by EAP-IG; every other edge stays ablated (the size search never reaches it: it keeps at most the
cap). The pool's `log_alpha` start from the EAP-IG ranking, the best-ranked edge at +`INIT_LOGIT`, falling
linearly in rank to -`INIT_LOGIT` at the pool's end. At node level every head and MLP has a gate. Adam
minimizes, for `MASK_STEPS` steps with one sampled mask each, the expected open gates against faithfulness:

    MASK_LAMBDA * E[gates open] / cap - mu * faithfulness(masked run)

where faithfulness is `mean_f (m_masked - m_empty) / mean_f (m_full - m_empty)` on the batch and the
multiplier `mu` (from MU_START) rises by MU_LR x (MASK_TARGET - faithfulness) after each step, never below
0 (dual ascent: the fewest gates that keep the default target, 0.8). With MASK_TARGET = None, a fixed
penalty instead: `mean_f relu(m_full_f - m_masked_f) / gap + MASK_LAMBDA * E[gates open] / cap`. Either way
the model's weights stay frozen (the gradient is taken for `log_alpha` alone). Every fact of a batch gets the
same scores, `-exp(log_alpha)` (minus the gate's odds: negative, so that both rankings order edges by the
learned mask), and the size search cuts circuits from that order as from any method's. A batch learns its own
mask; `discover` averages batches' scores as it averages facts'.

Cost per batch: EAP-IG's, plus one clean forward, one empty circuit run and `MASK_STEPS` forward + backward
passes of the masked model, each of which also adds each pool edge's writer delta into its reader (about
pool x batch x positions x d_model multiply-adds each way, and the pool's rows kept for the backward): on
SmolLM2-135M a masked step costs about 2.3 plain forward + backward passes. The bootstrap of circuit
stability resamples facts that all carry the same scores: it reports every edge stable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from atlas.core.attribution.base import ablated_outputs
from atlas.core.attribution.eap_ig import EAPIGInputs
from atlas.core.graph import Graph
from atlas.core.hooks import Hook, batch_major, from_batch_major, reader_slices, writer_slices
from atlas.core.intervention import patched_logits
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.core.readout import readout_batch, readout_logits
from atlas.spec import graph as index
from atlas.spec.params import (
    DEFAULT_MAX_EDGE_FRACTION,
    DEFAULT_MAX_NODE_FRACTION,
    DEFAULT_TARGET_FAITHFULNESS,
)

MASK_STEPS = 30  # Adam steps, each one forward + backward of the masked model
MASK_LR = 0.1  # Adam's learning rate on log_alpha
MASK_LAMBDA = 1.0  # weight of the open gates, per cap's worth
# Faithfulness the mask is held to (a Lagrange multiplier on it, raised by MU_LR x the shortfall each step,
# from MU_START); None: a fixed penalty instead, relu(m_full - m_masked) / gap + MASK_LAMBDA x open / cap.
MASK_TARGET: float | None = DEFAULT_TARGET_FAITHFULNESS
MU_START = 1.0
MU_LR = 1.0
INIT_LOGIT = 3.0  # log_alpha of the best-ranked edge; minus it at the end of the pool
POOL_FACTOR = 2  # edges whose gates are learned: the best-ranked POOL_FACTOR x the default cap
# Hard-concrete constants (Louizos et al. 2018, as Edge Pruning takes them): temperature and stretch.
BETA = 2 / 3
LOW, HIGH = -0.1, 1.1


class EdgeMaskRefinement:
    """The `eap-ig-mask` method: EAP-IG over inputs, then a learned mask started from its ranking.
    `losses`: 1 - faithfulness of the sampled mask at each step of the last batch's optimization."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def batch_scores(
        self,
        model: LoadedModel,
        graph: Graph,
        batch: Batch,
        metric: Metric,
        steps: int,
        ablation: str,
        level: str,
    ) -> torch.Tensor:
        start = EAPIGInputs().batch_scores(model, graph, batch, metric, steps, ablation, level)
        learned = learn_mask(
            model,
            graph,
            batch,
            metric,
            ablation,
            level,
            start.mean(0),
            steps=MASK_STEPS,
            lr=MASK_LR,
            sparsity=MASK_LAMBDA,
            target=MASK_TARGET,
        )
        self.losses = learned.losses
        scores = -learned.log_alpha.double().exp().float()
        return scores.unsqueeze(0).expand(batch.size, *scores.shape).contiguous()


@dataclass
class LearnedMask:
    log_alpha: torch.Tensor  # [n_writers, n_readers] (zero where no edge), or [n_writers] at node level
    losses: list[float] = field(default_factory=list)  # 1 - faithfulness at each step (sampled gates)


def learn_mask(
    model: LoadedModel,
    graph: Graph,
    batch: Batch,
    metric: Metric,
    ablation: str,
    level: str,
    start: torch.Tensor,
    *,
    steps: int = MASK_STEPS,
    lr: float = MASK_LR,
    sparsity: float = MASK_LAMBDA,
    target: float | None = MASK_TARGET,
    seed: int = 0,
) -> LearnedMask:
    """The mask learned on `batch`, started from the ranking of `start` (scores, signed: most negative
    first). See the module's docstring."""
    device = batch.clean.device
    ablated = ablated_outputs(model, graph, batch, ablation)
    view = readout_batch(batch)
    with torch.no_grad():
        full = metric(readout_logits(model, batch.clean, batch), view)
        nothing = torch.zeros(1, graph.n_writers, graph.n_readers, dtype=torch.bool)
        empty = metric(patched_logits(model, graph, batch, ablated, nothing, level), view)
    gap = max(float((full - empty).mean()), 1e-6)
    init = initial_log_alpha(graph, start, level)
    # The learned gates: the pool's edges (heads and MLPs at node level), flat indices in ranking order.
    pool = torch.from_numpy(_ranking(graph, start, level)[: _pool_size(graph, level)])
    log_alpha = init.flatten()[pool].to(device).requires_grad_(True)
    pool = pool.to(device)
    support = torch.zeros(init.numel(), dtype=torch.bool, device=device)
    support[pool] = True
    support = support.view(init.shape)
    optimizer = torch.optim.Adam([log_alpha], lr=lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    cap = _default_cap(graph, level)
    shift = BETA * math.log(-LOW / HIGH)
    weight = MU_START  # of faithfulness, against the open gates (target: the dual variable)
    losses = []
    for _ in range(steps):
        with torch.enable_grad():
            gates = sample_gates(log_alpha, generator)
            mask = torch.zeros(init.numel(), device=device).index_put((pool,), gates).view(init.shape)
            if level == "node":
                mask = mask + torch.arange(graph.n_writers, device=device).eq(0).float()  # `input` stays
            masked = metric(masked_logits(model, graph, batch, ablated, mask, level, support), view)
            faith = (masked - empty).mean() / gap
            opened = torch.sigmoid(log_alpha - shift).sum() / cap
            if target is None:
                loss = (full - masked).clamp(min=0).mean() / gap + sparsity * opened
            else:
                loss = sparsity * opened - weight * faith
            (grad,) = torch.autograd.grad(loss, [log_alpha])
        log_alpha.grad = grad
        optimizer.step()
        if target is not None:
            weight = max(0.0, weight + MU_LR * (target - faith.item()))
        losses.append(1 - faith.item())
    # Outside the pool, the start's order, below every learned gate.
    learned = log_alpha.detach().cpu()
    result = init.flatten() + float(learned.min()) - float(init.flatten()[pool.cpu()].min()) - 1.0
    result[pool.cpu()] = learned
    valid = graph.valid_edges if level == "edge" else torch.arange(graph.n_writers) > 0
    return LearnedMask(result.view(init.shape) * valid, losses)


def initial_log_alpha(graph: Graph, start: torch.Tensor, level: str) -> torch.Tensor:
    """log_alpha from a ranking: +INIT_LOGIT for the best-ranked, linear in rank to -INIT_LOGIT at the end
    of the pool, then on down to -INIT_LOGIT - 1 at the last (strictly decreasing: no ties)."""
    order = _ranking(graph, start, level)
    flat = np.zeros(start.numel())
    pool, n = _pool_size(graph, level), len(order)
    rank = np.arange(n, dtype=np.float64)
    head = INIT_LOGIT * (1 - 2 * rank / pool)
    tail = -INIT_LOGIT - (rank - pool) / max(n - pool, 1)
    flat[order] = np.where(rank <= pool, head, tail)
    return torch.from_numpy(flat.reshape(tuple(start.shape))).float()


def _ranking(graph: Graph, start: torch.Tensor, level: str) -> np.ndarray:
    """Valid edges (flat indices), or heads and MLPs, best-ranked first by the start's signed scores."""
    values = start.detach().cpu().double().numpy()
    if level == "edge":
        return index.edge_order(graph, values, "signed")
    return index.node_order(graph, values, "signed")


def sample_gates(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hard-concrete gates in [0, 1] (exactly 0 or 1 with positive probability), differentiable in
    log_alpha."""
    u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / BETA)
    return (s * (HIGH - LOW) + LOW).clamp(0, 1)


def masked_logits(
    model: LoadedModel,
    graph: Graph,
    batch: Batch,
    ablated: torch.Tensor,
    mask: torch.Tensor,
    level: str,
    support: torch.Tensor | None = None,
) -> torch.Tensor:
    """Readout logits `[batch, k, vocab]` of the continuously masked model (see the module's docstring),
    differentiable in `mask`: `[n_writers, n_readers]` at edge level (entries off the graph's edges, or off
    `support` where given, count as 0), `[n_writers]` at node level (`input`'s entry is ignored)."""
    if level == "edge":
        hooks = edge_mask_hooks(graph, ablated, mask, support)
    else:
        hooks = node_mask_hooks(graph, ablated, mask)
    return readout_logits(model, batch.clean, batch, hooks)


def edge_mask_hooks(
    graph: Graph, ablated: torch.Tensor, mask: torch.Tensor, support: torch.Tensor | None = None
) -> list[Hook]:
    """Writers record their differences from the ablated output (in the autograd graph: one row `[batch *
    pos * d]` each, and their running sum); each reader removes the running sum of its upstream writers'
    differences and adds back `mask` of each of its edges in `support` (default: every edge)."""
    support = graph.valid_edges if support is None else support.cpu() & graph.valid_edges
    rows: list[torch.Tensor] = []  # each writer's difference, in writer order
    running: list[torch.Tensor] = [ablated.new_zeros(ablated.shape[0] * ablated.shape[2] * ablated.shape[3])]
    hooks: list[Hook] = []
    for name, writers, per_head in writer_slices(graph):
        hooks.append((name, _record(rows, running, ablated[:, writers], per_head)))
    for name, readers, per_head in reader_slices(graph):
        sources = support[:, readers].any(1).nonzero().flatten()
        kept = (mask[sources.to(mask.device)][:, readers] * support[sources][:, readers].to(mask.device)).T
        hooks.append((name, _remove(rows, running, sources.tolist(), kept, per_head)))
    return hooks


def _record(
    rows: list[torch.Tensor], running: list[torch.Tensor], ablated: torch.Tensor, per_head: bool
) -> Callable[..., None]:
    def hook(tensor: torch.Tensor, hook: object) -> None:
        delta = batch_major(tensor, per_head) - ablated  # [batch, n, pos, d]
        mine = delta.transpose(0, 1).reshape(delta.shape[1], -1)
        rows.extend(mine.unbind(0))
        running[0] = running[0] + mine.sum(0)

    return hook


def _remove(
    rows: list[torch.Tensor],
    running: list[torch.Tensor],
    sources: list[int],
    kept: torch.Tensor,
    per_head: bool,
) -> Callable[..., torch.Tensor]:
    """`sources`: the upstream writers with an edge in the support into this hook's readers; `kept`:
    `[readers, sources]`, how much of each one's difference to add back."""

    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        removed = running[0].expand(kept.shape[0], -1)
        if sources:
            removed = removed - kept @ torch.stack([rows[w] for w in sources])
        batch, pos, d = tensor.shape[0], tensor.shape[1], tensor.shape[-1]
        removed = removed.reshape(kept.shape[0], batch, pos, d).transpose(0, 1)  # [batch, readers, pos, d]
        return tensor - from_batch_major(removed, per_head)

    return hook


def node_mask_hooks(graph: Graph, ablated: torch.Tensor, mask: torch.Tensor) -> list[Hook]:
    """Each head's and MLP's output becomes `ablated + mask (out - ablated)`."""

    def make(writers: slice, per_head: bool) -> Callable[..., torch.Tensor]:
        gate = mask[writers].view(1, -1, 1, 1)

        def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
            base = ablated[:, writers]
            return from_batch_major(base + gate * (batch_major(tensor, per_head) - base), per_head)

        return hook

    return [(name, make(writers, per_head)) for name, writers, per_head in writer_slices(graph)[1:]]


def _pool_size(graph: Graph, level: str) -> int:
    """Gates learned: POOL_FACTOR times the default cap, or every head and MLP at node level."""
    if level == "edge":
        return min(graph.n_edges, POOL_FACTOR * _default_cap(graph, level))
    return graph.n_components


def _default_cap(graph: Graph, level: str) -> int:
    if level == "edge":
        return max(1, round(DEFAULT_MAX_EDGE_FRACTION * graph.n_edges))
    return max(1, round(DEFAULT_MAX_NODE_FRACTION * graph.n_components))
