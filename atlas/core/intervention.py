"""Running the model with only a circuit's edges (or nodes): every other edge carries its ablated value.

Edge level: each reader's input becomes its input in this run minus, for every writer whose edge to it is
not kept, (that writer's output in this run - its ablated output). Writers upstream of a patched reader
change too, so their differences are taken in the same run, in forward order (EAP-IG's evaluate_graph).
Circuits are sparse, so instead of summing the dropped edges (almost all of them) each reader subtracts the
running sum of every upstream writer's difference and adds back the few kept ones.

Node level: every head and MLP outside the circuit outputs its ablated value (sound whatever follows a
node: Gemma 3 normalizes head outputs before the residual add).

Several circuits run in one forward pass, stacked on the batch axis (`[circuits * batch, ...]`): the
clean tokens repeated, each copy patched by its own circuit. Logits come only at the target positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atlas.core.graph import Graph
from atlas.core.hooks import Hook, batch_major, from_batch_major, reader_slices, writer_slices
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.core.readout import readout_logits


@torch.no_grad()
def patched_logits(
    model: LoadedModel, graph: Graph, batch: Batch, ablated: torch.Tensor, circuits: torch.Tensor, level: str
) -> torch.Tensor:
    """Readout logits `[n_circuits * batch, k, vocab]` (circuit-major) of `batch` run once per circuit.
    `ablated`: every writer's ablated output `[batch, n_writers, pos, d]`; `circuits`: bool edge masks
    `[n_circuits, n_writers, n_readers]` (at node level, a writer is kept when it has a kept edge)."""
    circuits = circuits.to(batch.clean.device)
    if circuits.dim() != 3:
        raise ValueError(f"circuits must be [n_circuits, n_writers, n_readers], got {list(circuits.shape)}")
    tokens = batch.clean.repeat(circuits.shape[0], 1)
    if level == "node":
        hooks = _node_hooks(graph, ablated, circuits.any(2))
    else:
        hooks = _edge_hooks(graph, ablated, circuits & graph.valid_edges.to(circuits.device))
    return readout_logits(model, tokens, batch, hooks)


def _edge_hooks(graph: Graph, ablated: torch.Tensor, keep: torch.Tensor) -> list[Hook]:
    n_circuits, batch = keep.shape[0], ablated.shape[0]
    # Differences are kept only for writers some circuit keeps an edge of: the ones added back.
    kept_writers = keep.any(2).any(0).nonzero().flatten()
    slot_of = torch.full((graph.n_writers,), -1, dtype=torch.long, device=keep.device)
    slot_of[kept_writers] = torch.arange(len(kept_writers), device=keep.device)
    difference = ablated.new_zeros(n_circuits, len(kept_writers), batch, *ablated.shape[2:])
    running = ablated.new_zeros(n_circuits, batch, *ablated.shape[2:])  # sum of every upstream difference
    keep_kept = keep[:, kept_writers]  # [circuits, kept writers, n_readers]
    hooks: list[Hook] = []
    # Hooks fire in forward order, so at each reader `running` holds exactly its upstream writers.
    for name, indices, per_head in writer_slices(graph):
        slots = slot_of[indices]
        hooks.append((name, _record(difference, running, ablated[:, indices], slots, per_head)))
    for name, indices, per_head in reader_slices(graph):
        # Only the writers some circuit keeps an edge of into these readers are added back here: a few.
        mine = keep_kept[:, :, indices]
        slots = mine.any(2).any(0).nonzero().flatten()
        hooks.append((name, _patch(difference, running, slots, mine[:, slots].to(ablated.dtype), per_head)))
    return hooks


def _record(
    difference: torch.Tensor,
    running: torch.Tensor,
    ablated: torch.Tensor,
    slots: torch.Tensor,
    per_head: bool,
) -> Callable[..., None]:
    mine = (slots >= 0).nonzero().flatten()
    targets = slots[mine]

    def hook(tensor: torch.Tensor, hook: object) -> None:
        n_circuits = running.shape[0]
        output = batch_major(tensor, per_head).unflatten(0, (n_circuits, -1))  # [C, B, n, pos, d]
        delta = output - ablated.unsqueeze(0)
        running.add_(delta.sum(2))
        if len(mine):
            difference[:, targets] = delta[:, :, mine].transpose(1, 2)

    return hook


def _patch(
    difference: torch.Tensor, running: torch.Tensor, slots: torch.Tensor, keep: torch.Tensor, per_head: bool
) -> Callable[..., torch.Tensor]:
    """`slots`: rows of `difference` some circuit adds back here; `keep`: `[circuits, len(slots), readers of
    this hook]` as floats."""
    n_circuits = difference.shape[0]
    any_kept = len(slots) > 0

    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        removed = running.unsqueeze(2)  # [C, B, 1, pos, d]: every upstream difference...
        if any_kept:  # ...but the kept ones
            kept = difference[:, slots].reshape(n_circuits, len(slots), -1)
            restored = torch.bmm(keep.transpose(1, 2), kept)
            restored = restored.view(n_circuits, keep.shape[2], *difference.shape[2:]).transpose(1, 2)
            removed = removed - restored
        else:
            removed = removed.expand(-1, -1, keep.shape[2], -1, -1)
        return tensor - from_batch_major(removed.flatten(0, 1), per_head)

    return hook


def _node_hooks(graph: Graph, ablated: torch.Tensor, kept: torch.Tensor) -> list[Hook]:
    """`kept`: bool `[circuits, n_writers]`; `input` is never ablated."""

    def make(indices: slice, per_head: bool) -> Callable[..., torch.Tensor]:
        keep = kept[:, indices][:, None, :, None, None]  # [C, 1, n, 1, 1]

        def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
            output = batch_major(tensor, per_head).unflatten(0, (kept.shape[0], -1))
            patched = torch.where(keep, output, ablated[:, indices].unsqueeze(0))
            return from_batch_major(patched.flatten(0, 1), per_head)

        return hook

    return [(name, make(indices, per_head)) for name, indices, per_head in writer_slices(graph)[1:]]
