"""Edge attribution: EAP and EAP-IG scores for every edge of the graph, batched over facts.

An edge's score is `(a_corrupt[writer] - a_clean[writer]) . d metric / d input[reader]`, summed over
positions and averaged over facts: the first-order estimate of how the metric changes when that one edge
carries the corrupt value (Syed et al.; Hanna et al.). EAP takes the gradient on the clean run. EAP-IG
averages it over `steps` inputs interpolated from the corrupt to the clean input embeddings, alpha = k/steps
for k = 1..steps (a right Riemann sum, so steps=1 is exactly EAP).

Cost per batch: one gradient-free corrupt forward, `steps` forward+backward passes, and one matmul
`[n_writers, batch*pos*d] @ [batch*pos*d, n_readers]`; gradients at readers are summed across steps
first, so the matmul is done once however many steps there are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from atlas.core.graph import Graph
from atlas.core.hooks import INPUT_HOOK, Hook, as_major, reader_slices, record_writers, writer_slices
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.core.params import ABLATIONS, LEVELS, METHODS, Ablation, Level, Method

Progress = Callable[[int], None]


def graph_of(model: LoadedModel) -> Graph:
    return Graph(model.n_layers, model.n_heads)


@torch.no_grad()
def writer_activations(model: LoadedModel, graph: Graph, tokens: torch.Tensor) -> torch.Tensor:
    """Every writer's output on `tokens`: `[n_writers, batch, pos, d_model]`."""
    buffer = torch.empty(graph.n_writers, *tokens.shape, model.d_model, device=tokens.device)
    model.bridge.run_with_hooks(tokens, fwd_hooks=record_writers(graph, buffer), return_type=None)
    return buffer


def ablated_activations(
    model: LoadedModel, graph: Graph, batch: Batch, ablation: Ablation, clean: torch.Tensor | None = None
) -> torch.Tensor:
    """What a writer's output becomes when an edge is ablated: the corrupt run's, zeros, or the mean of
    the clean run over the batch's real tokens."""
    if ablation == "corrupt":
        return writer_activations(model, graph, batch.corrupt)
    if ablation == "zero":
        return torch.zeros(graph.n_writers, *batch.clean.shape, model.d_model, device=batch.clean.device)
    if ablation == "mean":
        clean = writer_activations(model, graph, batch.clean) if clean is None else clean
        mask = batch.position_mask()[None, :, :, None].to(clean.dtype)
        mean = (clean * mask).sum((1, 2), keepdim=True) / mask.sum((1, 2), keepdim=True)
        return mean.expand_as(clean).contiguous()
    raise ValueError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")


def edge_scores(
    model: LoadedModel,
    batches: Sequence[Batch],
    metric: Metric,
    *,
    method: Method = "eap-ig",
    steps: int = 5,
    ablation: Ablation = "corrupt",
    level: Level = "edge",
    progress: Progress | None = None,
) -> torch.Tensor:
    """Edge scores `[n_writers, n_readers]` averaged over all facts, zero where no edge exists; or, at
    node level, each writer's score `[n_writers]` (gradient at its output rather than at readers' inputs;
    the input's own score is zero, it is never ablated)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from {', '.join(LEVELS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    graph = graph_of(model)
    device = model.device
    shape = (graph.n_writers, graph.n_readers) if level == "edge" else (graph.n_writers,)
    scores = torch.zeros(shape, device=device)
    n_facts = 0
    for batch in batches:
        batch = batch.to(device)
        scores += _batch_scores(
            model, graph, batch, metric, steps if method == "eap-ig" else 1, ablation, level
        )
        n_facts += batch.size
        if progress is not None:
            progress(batch.size)
    scores /= max(n_facts, 1)
    if level == "node":
        scores[0] = 0.0
        return scores
    return scores * graph.valid_edges.to(device)


def _batch_scores(
    model: LoadedModel,
    graph: Graph,
    batch: Batch,
    metric: Metric,
    steps: int,
    ablation: Ablation,
    level: Level,
) -> torch.Tensor:
    shape = (*batch.clean.shape, model.d_model)
    clean = torch.empty(graph.n_writers, *shape, device=batch.clean.device)
    # Corrupt-run input embeddings are the start of the integration path whatever the ablation.
    corrupt_input = writer_activations_at_input(model, batch.corrupt)
    # Edges take the gradient at each reader's input, nodes at each writer's output.
    slots = reader_slices(graph) if level == "edge" else writer_slices(graph)
    grads = torch.zeros(graph.n_readers if level == "edge" else graph.n_writers, *shape, device=clean.device)
    for step in range(steps, 0, -1):  # alpha = 1 first: that pass also records the clean activations
        alpha = step / steps
        hooks = [_interpolate_input(corrupt_input, alpha)]
        if step == steps:
            hooks += record_writers(graph, clean)
        hooks += _accumulate_grads(slots, grads)
        with torch.enable_grad():
            logits = model.bridge.run_with_hooks(batch.clean, fwd_hooks=hooks, return_type="logits")
            metric(logits, batch).sum().backward()
    # In place: these buffers are the largest after the gradients.
    delta = ablated_activations(model, graph, batch, ablation, clean).sub_(clean)
    delta.mul_(batch.position_mask()[None, :, :, None])
    if level == "node":
        return (delta * grads).flatten(1).sum(1) / steps
    return (delta.flatten(1) @ grads.flatten(1).T) / steps


@torch.no_grad()
def writer_activations_at_input(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """The residual stream entering block 0 (embeddings): `[batch, pos, d_model]`."""
    captured: list[torch.Tensor] = []

    def grab(tensor: torch.Tensor, hook: object) -> None:
        captured.append(tensor.detach())
        raise _StopForward

    with contextlib.suppress(_StopForward):
        model.bridge.run_with_hooks(tokens, fwd_hooks=[(INPUT_HOOK, grab)], return_type=None)
    return captured[0]


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once what it needs is captured."""


def _interpolate_input(corrupt_input: torch.Tensor, alpha: float) -> Hook:
    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        if alpha == 1.0:
            return tensor.detach().requires_grad_(True)
        return (corrupt_input + alpha * (tensor.detach() - corrupt_input)).requires_grad_(True)

    return INPUT_HOOK, hook


def _accumulate_grads(slots: list[tuple[str, slice, bool]], grads: torch.Tensor) -> list[Hook]:
    """Hooks that add d metric / d (hooked tensor) into `grads` `[n_slots, batch, pos, d]` on backward."""

    def make(indices: slice, per_head: bool) -> Callable[..., torch.Tensor]:
        def on_grad(grad: torch.Tensor) -> None:
            grads[indices] += as_major(grad, per_head)

        def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
            # A fresh node: the bridge passes MLP inputs in the same tensor the residual skip adds,
            # and the gradient wanted is this slot's alone.
            reader_input = tensor.clone()
            reader_input.register_hook(on_grad)
            return reader_input

        return hook

    return [(name, make(indices, per_head)) for name, indices, per_head in slots]
