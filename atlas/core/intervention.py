"""Running the model with only a circuit's edges (or nodes): every other edge carries its ablated value.

Edge level: each reader's input becomes its input in this run minus, for every writer whose edge to it is
not kept, (that writer's output in this run - its ablated output). Writers upstream of a patched reader
change too, so their differences are taken in the same run, in forward order (EAP-IG's evaluate_graph).
Small circuits keep few edges, so instead of summing the dropped edges (almost all of them) such a reader
subtracts the running sum of every upstream writer's difference and adds back the few kept ones; readers
that keep most of their edges (large circuits: the faithfulness curve's upper sizes) subtract the dropped
ones alone.

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
    """`keep`: `[circuits, n_writers, n_readers]`, or `[circuits, batch, n_writers, n_readers]` per fact
    (valid edges only)."""
    n_circuits, batch = keep.shape[0], ablated.shape[0]
    per_fact = keep.dim() == 4
    valid = graph.valid_edges.to(keep.device)
    # Per reader hook, the cheaper of two equal sums: every upstream difference minus the kept edges'
    # (small circuits), or the dropped edges' alone (large ones: the whole model drops nothing).
    plans = []
    needed = torch.zeros(graph.n_writers, dtype=torch.bool, device=keep.device)
    for name, indices, per_head in reader_slices(graph):
        kept_edges = keep[..., indices]  # [circuits, (batch,) n_writers, readers of this hook]
        dropped_edges = valid[:, indices] & ~kept_edges
        kept = kept_edges.flatten(0, -3).any(0).any(-1)
        dropped = dropped_edges.flatten(0, -3).any(0).any(-1)
        add_back = int(kept.sum()) <= int(dropped.sum())
        writers = (kept if add_back else dropped).nonzero().flatten()
        needed[writers] = True
        edges = kept_edges if add_back else dropped_edges
        plans.append((name, per_head, writers, edges[..., writers, :], add_back))
    # Differences are kept only for the writers some reader adds back or subtracts.
    kept_writers = needed.nonzero().flatten()
    slot_of = torch.full((graph.n_writers,), -1, dtype=torch.long, device=keep.device)
    slot_of[kept_writers] = torch.arange(len(kept_writers), device=keep.device)
    # Per fact the products run per (circuit, fact), so facts lead; shared, per circuit over the batch.
    shape = (batch, len(kept_writers)) if per_fact else (len(kept_writers), batch)
    difference = ablated.new_zeros(n_circuits, *shape, *ablated.shape[2:])
    running = ablated.new_zeros(n_circuits, batch, *ablated.shape[2:])  # sum of every upstream difference
    hooks: list[Hook] = []
    # Hooks fire in forward order, so at each reader `running` holds exactly its upstream writers.
    for name, indices, per_head in writer_slices(graph):
        slots = slot_of[indices]
        hooks.append((name, _record(difference, running, ablated[:, indices], slots, per_head, per_fact)))
    for name, per_head, writers, edges, add_back in plans:
        patch = _patch(difference, running, slot_of[writers], edges.to(ablated.dtype), per_head, add_back)
        hooks.append((name, patch))
    return hooks


def _record(
    difference: torch.Tensor,
    running: torch.Tensor,
    ablated: torch.Tensor,
    slots: torch.Tensor,
    per_head: bool,
    per_fact: bool,
) -> Callable[..., None]:
    """Adds this hook's writers' differences (output - ablated) to `running` `[C, B, pos, d]` and keeps
    those of the writers in `slots` (-1: not kept) in `difference` (`[C, B, K, pos, d]` per fact, else
    `[C, K, B, pos, d]`)."""
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
            delta = output[:, :, mine] - ablated_mine
            if per_fact:
                difference[:, :, targets] = delta
            else:
                difference[:, targets] = delta.transpose(1, 2)

    return hook


def _patch(
    difference: torch.Tensor,
    running: torch.Tensor,
    slots: torch.Tensor,
    edges: torch.Tensor,
    per_head: bool,
    add_back: bool,
) -> Callable[..., torch.Tensor]:
    """`slots`: the rows of `difference` this hook uses; `edges`: `[circuits, (batch,) len(slots), readers
    of this hook]` as floats. add_back: each reader's input loses every upstream difference (`running`)
    and gets back those of its kept edges; else it loses those of its dropped edges. Products are taken
    only for the readers with such an edge."""
    n_circuits, batch = running.shape[:2]
    per_fact = edges.dim() == 4
    readers = edges.flatten(0, -3).ne(0).any(0).any(0).nonzero().flatten()
    any_edge = len(slots) > 0 and len(readers) > 0
    weights = edges[..., readers].flatten(0, 1) if per_fact else edges[..., readers]
    weights = weights.transpose(1, 2)  # [C (* B), readers with an edge, slots]
    # Slots are numbered in forward order. Gathering many rows of `difference` copies more than the
    # product costs, so where the slots fill most of a prefix the product runs over that prefix (a view),
    # with zero weights for the slots not used.
    prefix = int(slots.max()) + 1 if len(slots) else 0
    take: slice | torch.Tensor = slots
    if len(slots) > prefix // 2:
        padded = weights.new_zeros(*weights.shape[:2], prefix)
        padded[..., slots] = weights
        weights, take = padded, slice(0, prefix)

    def products() -> torch.Tensor:
        """Sum over `slots` of difference x edge, per reader with an edge: `[C * B, readers, pos, d]`."""
        if per_fact:
            rows = difference[:, :, take].reshape(n_circuits * batch, weights.shape[2], -1)
            return torch.bmm(weights, rows).view(n_circuits * batch, len(readers), *running.shape[2:])
        rows = difference[:, take].reshape(n_circuits, weights.shape[2], -1)
        summed = torch.bmm(weights, rows).view(n_circuits, len(readers), *running.shape[1:])
        return summed.transpose(1, 2).flatten(0, 1)

    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        if add_back:
            flat = running.flatten(0, 1)  # [C * B, pos, d]
            out = tensor - (flat.unsqueeze(2) if per_head else flat)
        elif any_edge:
            out = tensor.clone()
        else:
            return tensor  # nothing dropped into these readers
        if any_edge:
            sign = 1.0 if add_back else -1.0
            summed = products()
            if per_head:  # index_add_, not out[:, :, readers] += ...: a third of the time
                out.index_add_(2, readers, summed.transpose(1, 2), alpha=sign)
            else:
                out.add_(summed.squeeze(1), alpha=sign)
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
