"""Running the model with only a circuit's edges: every other edge carries its ablated value.

Each reader's input becomes its clean input minus, for every writer whose edge to it is not kept,
(that writer's output in this run - its ablated output). Writers upstream of a patched reader change too,
so their differences are taken in the same run, in forward order (EAP-IG's evaluate_graph).

Circuits are sparse, so instead of summing the dropped edges (almost all of them) each reader subtracts
the running sum of every upstream writer's difference and adds back the few kept ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atlas.core.graph import Graph
from atlas.core.hooks import Hook, as_major, from_major, reader_slices, writer_slices
from atlas.core.models import LoadedModel


@torch.no_grad()
def circuit_logits(
    model: LoadedModel, graph: Graph, tokens: torch.Tensor, ablated: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Logits `[batch, pos, vocab]` with edges outside `keep` `[n_writers, n_readers]` ablated to `ablated`
    `[n_writers, batch, pos, d]`."""
    keep = (keep.cpu() & graph.valid_edges).to(tokens.device, ablated.dtype)
    difference = torch.zeros_like(ablated)  # this run's writer outputs minus their ablated values
    running = torch.zeros_like(ablated[0])  # sum of `difference` over the writers seen so far
    hooks: list[Hook] = []
    # Hooks fire in forward order, so at each reader `running` holds exactly its upstream writers.
    for name, indices, per_head in writer_slices(graph):
        hooks.append((name, _record_difference(difference, running, ablated, indices, per_head)))
    for name, indices, per_head in reader_slices(graph):
        hooks.append((name, _patch_reader(difference, running, keep[:, indices], per_head)))
    return model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")


def _record_difference(
    difference: torch.Tensor, running: torch.Tensor, ablated: torch.Tensor, indices: slice, per_head: bool
) -> Callable[..., None]:
    def hook(tensor: torch.Tensor, hook: object) -> None:
        difference[indices] = as_major(tensor, per_head) - ablated[indices]
        running.add_(difference[indices].sum(0))

    return hook


def _patch_reader(
    difference: torch.Tensor, running: torch.Tensor, keep: torch.Tensor, per_head: bool
) -> Callable[..., torch.Tensor]:
    kept_writers = keep.any(1).nonzero().flatten()
    kept = keep[kept_writers].T  # [readers, kept writers]

    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        restored = (kept @ difference[kept_writers].flatten(1)).view(-1, *difference.shape[1:])
        return tensor - from_major(running.unsqueeze(0) - restored, per_head)

    return hook


@torch.no_grad()
def node_patched_logits(
    model: LoadedModel, graph: Graph, tokens: torch.Tensor, ablated: torch.Tensor, kept_writers: torch.Tensor
) -> torch.Tensor:
    """Logits with every head and MLP outside `kept_writers` `[n_writers]` replaced by its ablated output.
    Sound whatever follows a node (Gemma 3 normalizes head outputs before the residual add)."""
    kept = kept_writers.to(tokens.device)

    def make(indices: slice, per_head: bool) -> Callable[..., torch.Tensor]:
        keep = kept[indices].view(-1, 1, 1, 1)

        def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
            return from_major(torch.where(keep, as_major(tensor, per_head), ablated[indices]), per_head)

        return hook

    hooks = [(name, make(indices, per_head)) for name, indices, per_head in writer_slices(graph)[1:]]
    return model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")


def run_circuit(
    model: LoadedModel,
    graph: Graph,
    tokens: torch.Tensor,
    ablated: torch.Tensor,
    circuit_edges: torch.Tensor,
    level: str,
) -> torch.Tensor:
    """Logits of the model restricted to a circuit, by edge patching or (level "node") node patching."""
    if level == "node":
        return node_patched_logits(model, graph, tokens, ablated, circuit_edges.any(1))
    return circuit_logits(model, graph, tokens, ablated, circuit_edges)
