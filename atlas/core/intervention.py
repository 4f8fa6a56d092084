"""Running the model with only a circuit's edges (or nodes): every other edge carries its ablated value.

Edge level: each reader's input becomes its input in this run minus, for every writer whose edge to it is
not kept, (that writer's output in this run - its ablated output). Writers upstream of a patched reader
change too, so their differences are taken in the same run, in forward order (EAP-IG's evaluate_graph).
Circuits are sparse, so instead of summing the dropped edges (almost all of them) each reader subtracts the
running sum of every upstream writer's difference and adds back the few kept ones.

Node level: every head and MLP outside the circuit outputs its ablated value (sound whatever follows a
node: Gemma 3 normalizes head outputs before the residual add).

Several circuits run in one forward pass, stacked on the batch axis (`[circuits * batch, ...]`): the
clean tokens repeated, each copy patched by its own circuit. A circuit may also differ from fact to fact
(`[circuits, batch, n_writers, n_readers]`): the size search judges each fact on the circuit ranked without
it. Logits come only at the target positions.
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
    `[n_circuits, n_writers, n_readers]`, or `[n_circuits, batch, n_writers, n_readers]` for a mask per
    fact (at node level, a writer is kept when it has a kept edge)."""
    circuits = circuits.to(batch.clean.device)
    per_fact = circuits.dim() == 4
    if circuits.dim() not in (3, 4) or (per_fact and circuits.shape[1] != batch.size):
        raise ValueError(
            "circuits must be [n_circuits, n_writers, n_readers] or [n_circuits, batch "
            f"({batch.size}), n_writers, n_readers], got {list(circuits.shape)}"
        )
    tokens = batch.clean.repeat(circuits.shape[0], 1)
    if level == "node":
        kept = circuits.any(-1)
        hooks = _node_hooks(graph, ablated, kept if per_fact else kept[:, None])
    else:
        hooks = _edge_hooks(graph, ablated, circuits & graph.valid_edges.to(circuits.device))
    return readout_logits(model, tokens, batch, hooks)


def _edge_hooks(graph: Graph, ablated: torch.Tensor, keep: torch.Tensor) -> list[Hook]:
    """`keep`: `[circuits, n_writers, n_readers]`, or `[circuits, batch, n_writers, n_readers]` per fact."""
    n_circuits, batch = keep.shape[0], ablated.shape[0]
    # Differences are kept only for writers some circuit keeps an edge of: the ones added back.
    kept_writers = keep.flatten(0, -3).any(2).any(0).nonzero().flatten()
    slot_of = torch.full((graph.n_writers,), -1, dtype=torch.long, device=keep.device)
    slot_of[kept_writers] = torch.arange(len(kept_writers), device=keep.device)
    difference = ablated.new_zeros(n_circuits, len(kept_writers), batch, *ablated.shape[2:])
    running = ablated.new_zeros(n_circuits, batch, *ablated.shape[2:])  # sum of every upstream difference
    keep_kept = keep[..., kept_writers, :]  # [circuits, (batch,) kept writers, n_readers]
    hooks: list[Hook] = []
    # Hooks fire in forward order, so at each reader `running` holds exactly its upstream writers.
    for name, indices, per_head in writer_slices(graph):
        slots = slot_of[indices]
        hooks.append((name, _record(difference, running, ablated[:, indices], slots, per_head)))
    for name, indices, per_head in reader_slices(graph):
        # Only the writers some circuit keeps an edge of into these readers are added back here: a few.
        mine = keep_kept[..., indices]
        slots = mine.flatten(0, -3).any(2).any(0).nonzero().flatten()
        weights = mine[..., slots, :].to(ablated.dtype)
        hooks.append((name, _patch(difference, running, slots, weights, per_head)))
    return hooks


def _record(
    difference: torch.Tensor,
    running: torch.Tensor,
    ablated: torch.Tensor,
    slots: torch.Tensor,
    per_head: bool,
) -> Callable[..., None]:
    """Adds this hook's writers' differences (output - ablated) to `running` `[C, B, pos, d]` and keeps
    those of the writers in `slots` (-1: not kept) in `difference`."""
    mine = (slots >= 0).nonzero().flatten()
    targets = slots[mine]
    ablated_sum = ablated.sum(1)  # [B, pos, d]: the sum of differences is sum(outputs) - this
    ablated_mine = ablated[:, mine].unsqueeze(0)

    def hook(tensor: torch.Tensor, hook: object) -> None:
        n_circuits = running.shape[0]
        summed = tensor.sum(2) if per_head else tensor  # [C * B, pos, d]
        running.add_(summed.reshape(running.shape)).sub_(ablated_sum)
        if len(mine):
            output = batch_major(tensor, per_head).unflatten(0, (n_circuits, -1))  # [C, B, n, pos, d]
            difference[:, targets] = (output[:, :, mine] - ablated_mine).transpose(1, 2)

    return hook


def _patch(
    difference: torch.Tensor, running: torch.Tensor, slots: torch.Tensor, keep: torch.Tensor, per_head: bool
) -> Callable[..., torch.Tensor]:
    """`slots`: rows of `difference` some circuit adds back here; `keep`: `[circuits, (batch,) len(slots),
    readers of this hook]` as floats. Each reader's input loses every upstream difference (`running`) and
    gets back the kept ones, computed only for the readers some circuit keeps an edge into."""
    n_circuits, _, batch = difference.shape[:3]
    per_fact = keep.dim() == 4
    readers = keep.flatten(0, -3).ne(0).any(1).any(0).nonzero().flatten()  # with a kept edge
    any_kept = len(slots) > 0 and len(readers) > 0
    # A mask per fact is a product per (circuit, fact); a shared one, per circuit over the whole batch.
    weights = keep[..., readers].flatten(0, 1) if per_fact else keep[..., readers]
    weights = weights.transpose(1, 2)  # [C (* B), kept readers, slots]

    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        flat = running.flatten(0, 1)  # [C * B, pos, d]
        out = tensor - (flat.unsqueeze(2) if per_head else flat)
        if any_kept:
            kept = difference[:, slots]  # [C, S, B, pos, d]
            if per_fact:
                kept = kept.transpose(1, 2).reshape(n_circuits * batch, len(slots), -1)
                restored = torch.bmm(weights, kept).view(
                    n_circuits * batch, len(readers), *out.shape[1:2], -1
                )
            else:
                restored = torch.bmm(weights, kept.reshape(n_circuits, len(slots), -1))
                restored = restored.view(n_circuits, len(readers), batch, -1, out.shape[-1]).transpose(1, 2)
                restored = restored.flatten(0, 1)  # [C * B, kept readers, pos, d]
            if per_head:  # index_add_, not out[:, :, readers] += ...: a third of the time
                out.index_add_(2, readers, restored.transpose(1, 2))
            else:
                out += restored.squeeze(1)
        return out

    return hook


def _node_hooks(graph: Graph, ablated: torch.Tensor, kept: torch.Tensor) -> list[Hook]:
    """`kept`: bool `[circuits, batch or 1, n_writers]`; `input` is never ablated."""

    def make(indices: slice, per_head: bool) -> Callable[..., torch.Tensor]:
        keep = kept[:, :, indices][..., None, None]  # [C, B or 1, n, 1, 1]

        def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
            output = batch_major(tensor, per_head).unflatten(0, (kept.shape[0], -1))
            patched = torch.where(keep, output, ablated[:, indices].unsqueeze(0))
            return from_batch_major(patched.flatten(0, 1), per_head)

        return hook

    return [(name, make(indices, per_head)) for name, indices, per_head in writer_slices(graph)[1:]]
