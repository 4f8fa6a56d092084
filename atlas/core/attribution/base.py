"""What every attribution method shares: activations of the writers, what an ablated edge carries, the
hooks that accumulate gradients at readers (or writers), and the per-fact score products.

Buffers are batch-major, `[batch, n, pos, d_model]`, so that the score products are one batched matmul
`[batch, n_writers, pos*d] @ [batch, pos*d, n_readers]` that keeps each fact's scores apart (the same
FLOPs as one matmul over all facts: the bootstrap of circuit stability needs them per fact).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import torch

from atlas.core.graph import Graph
from atlas.core.hooks import INPUT_HOOK, LOGITS_IN_HOOK, Hook, batch_major, writer_slices
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.core.readout import capture_at, readout_batch, readout_logits
from atlas.spec.params import ABLATIONS

Slots = list[tuple[str, slice, bool]]  # (hook name, indices, per-head?) as hooks.reader_slices gives them


class Scorer(Protocol):
    """One attribution method: per-fact scores of one batch, `[batch, n_writers, n_readers]` at edge
    level or `[batch, n_writers]` at node level (zero where no edge exists; the input's node score 0)."""

    def batch_scores(
        self,
        model: LoadedModel,
        graph: Graph,
        batch: Batch,
        metric: Metric,
        steps: int,
        ablation: str,
        level: str,
    ) -> torch.Tensor: ...


def record_writers(graph: Graph, buffer: torch.Tensor) -> list[Hook]:
    """Hooks that copy every writer's output into `buffer` `[batch, n_writers, pos, d]`."""

    def make(indices: slice, per_head: bool) -> Callable[..., None]:
        def hook(tensor: torch.Tensor, hook: object) -> None:
            buffer[:, indices] = batch_major(tensor.detach(), per_head)

        return hook

    return [(name, make(indices, per_head)) for name, indices, per_head in writer_slices(graph)]


@torch.no_grad()
def writer_outputs(model: LoadedModel, graph: Graph, tokens: torch.Tensor) -> torch.Tensor:
    """Every writer's output on `tokens`: `[batch, n_writers, pos, d_model]` (the pass stops at the final
    norm: no logits are computed)."""
    buffer = torch.empty(
        tokens.shape[0], graph.n_writers, tokens.shape[1], model.d_model, device=tokens.device
    )
    capture_at(model, tokens, LOGITS_IN_HOOK, record_writers(graph, buffer))
    return buffer


def ablated_outputs(
    model: LoadedModel, graph: Graph, batch: Batch, ablation: str, clean: torch.Tensor | None = None
) -> torch.Tensor:
    """What a writer's output becomes when an edge is ablated, `[batch, n_writers, pos, d]`: the corrupt
    run's, zeros, or the mean of the clean run over the batch's real tokens."""
    if ablation == "corrupt":
        return writer_outputs(model, graph, batch.corrupt)
    if ablation == "zero":
        return torch.zeros(
            batch.size, graph.n_writers, batch.clean.shape[1], model.d_model, device=batch.clean.device
        )
    if ablation == "mean":
        if batch.ablation_mean is not None:
            shape = (batch.size, graph.n_writers, batch.clean.shape[1], model.d_model)
            return batch.ablation_mean.expand(shape).contiguous()
        clean = writer_outputs(model, graph, batch.clean) if clean is None else clean
        total, count = _masked_sums(clean, batch)
        return (total / count).expand_as(clean).contiguous()
    raise ValueError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")


def _masked_sums(clean: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Writer outputs summed over the batch's real tokens `[1, n_writers, 1, d]`, and how many."""
    mask = batch.position_mask()[:, None, :, None].to(clean.dtype)
    return (clean * mask).sum((0, 2), keepdim=True), mask.sum((0, 2), keepdim=True)


def micro_batches(model: LoadedModel, graph: Graph, batch: Batch, size: int, ablation: str) -> list[Batch]:
    """`batch` in passes of at most `size` facts. Under the mean ablation each carries the whole batch's
    mean (taken here a pass at a time), so the split changes no fact's result beyond float rounding."""
    if size >= batch.size:
        return [batch]
    parts = [batch.rows(start, start + size) for start in range(0, batch.size, size)]
    if ablation == "mean" and batch.ablation_mean is None:
        sums = [_masked_sums(writer_outputs(model, graph, part.clean), part) for part in parts]
        mean = torch.stack([total for total, _ in sums]).sum(0) / torch.stack([n for _, n in sums]).sum(0)
        parts = [dataclasses.replace(part, ablation_mean=mean) for part in parts]
    return parts


@torch.no_grad()
def input_embeddings(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """The residual stream entering block 0 (embeddings): `[batch, pos, d_model]`."""
    return capture_at(model, tokens, INPUT_HOOK).detach()


def accumulate_grads(slots: Slots, grads: torch.Tensor, offset: int = 0) -> list[Hook]:
    """Hooks that add d metric / d (hooked tensor) into `grads` `[batch, n, pos, d]` on backward, slot
    indices shifted by `-offset` (a buffer that holds only the slots from `offset` on)."""

    def make(indices: slice, per_head: bool) -> Callable[..., torch.Tensor]:
        target = slice(indices.start - offset, indices.stop - offset)

        def on_grad(grad: torch.Tensor) -> None:
            grads[:, target] += batch_major(grad, per_head)

        def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
            # A fresh node: the bridge passes MLP inputs in the same tensor the residual skip adds,
            # and the gradient wanted is this slot's alone.
            slot_input = tensor.clone()
            slot_input.register_hook(on_grad)
            return slot_input

        return hook

    return [(name, make(indices, per_head)) for name, indices, per_head in slots]


def backward_metric(model: LoadedModel, batch: Batch, metric: Metric, hooks: list[Hook]) -> None:
    """One forward with `hooks` (logits only at the target positions) and the metric's backward."""
    with torch.enable_grad():
        logits = readout_logits(model, batch.clean, batch, hooks)
        metric(logits, readout_batch(batch)).sum().backward()


def fact_products(delta: torch.Tensor, grads: torch.Tensor, level: str) -> torch.Tensor:
    """Per-fact scores from writer deltas `[batch, n_writers, pos, d]` (padding zeroed) and summed gradients:
    at readers `[batch, n_readers, pos, d]` -> `[batch, n_writers, n_readers]`, or at writers -> `[batch,
    n_writers]`."""
    if level == "node":
        return (delta * grads).flatten(2).sum(2)
    return torch.bmm(delta.flatten(2), grads.flatten(2).transpose(1, 2))


def masked_delta(ablated: torch.Tensor, clean: torch.Tensor, batch: Batch) -> torch.Tensor:
    """ablated - clean, in place in `ablated`, zero at padding."""
    delta = ablated.sub_(clean)
    return delta.mul_(batch.position_mask()[:, None, :, None])
