"""EAP-IG over writer activations (MIB's "EAP-IG-activations"): integrated gradients taken at each writer's
output rather than at the input embeddings.

For one group of writers at a time (the input; one layer's heads; one layer's MLP), the group's output is
set to `ablated + alpha * (clean - ablated)`, alpha = k/steps for k = 1..steps, and the gradient is taken at
every reader downstream of the group (at node level, at the group's own output). A writer's edge scores are
its delta `ablated - clean` times those gradients averaged over the steps: the path integral of the edge
from its ablated to its clean value, with the rest of the model clean.

The alpha = 1 step is the clean run for every group, so it is one shared pass. Each other pass replaces the
group's output by a fresh leaf: the backward stops there, and only readers downstream of it are hooked.
Cost per batch: one gradient-free corrupt forward, one clean forward+backward, and (steps - 1) forward +
partial backward passes per group (2 * n_layers + 1 groups): far more than EAP-IG over inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atlas.core.attribution.base import (
    ablated_outputs,
    accumulate_grads,
    backward_metric,
    fact_products,
    masked_delta,
    record_writers,
)
from atlas.core.graph import Graph
from atlas.core.hooks import INPUT_HOOK, Hook, batch_major, from_batch_major, reader_slices, writer_slices
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch


class EAPIGActivations:
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
        edge = level == "edge"
        shape = (batch.size, graph.n_writers, batch.clean.shape[1], model.d_model)
        clean = torch.empty(shape, device=batch.clean.device)
        readers = reader_slices(graph)
        slots = readers if edge else writer_slices(graph)
        n_slots = graph.n_readers if edge else graph.n_writers
        # alpha = 1: the clean run, shared by every group; it also records the clean activations.
        at_clean = torch.zeros(batch.size, n_slots, *shape[2:], device=clean.device)
        hooks: list[Hook] = [(INPUT_HOOK, _requiring_grad), *record_writers(graph, clean)]
        backward_metric(model, batch, metric, hooks + accumulate_grads(slots, at_clean))
        delta = masked_delta(ablated_outputs(model, graph, batch, ablation, clean), clean, batch)

        scores = torch.zeros(
            batch.size, graph.n_writers, *([graph.n_readers] if edge else []), device=clean.device
        )
        for name, writers, per_head in writer_slices(graph):
            if edge:
                first = _first_reader_after(graph, writers)
                downstream = [slot for slot in readers if slot[1].start >= first]
                grads = torch.zeros(batch.size, graph.n_readers - first, *shape[2:], device=clean.device)
            else:
                first, downstream = writers.start, []
                grads = torch.zeros(batch.size, writers.stop - writers.start, *shape[2:], device=clean.device)
            for step in range(1, steps):
                value = clean[:, writers] + (1 - step / steps) * delta[:, writers]
                hook = _set_output(value, per_head, None if edge else grads)
                backward_metric(
                    model, batch, metric, [(name, hook), *accumulate_grads(downstream, grads, first)]
                )
            grads += at_clean[:, first:] if edge else at_clean[:, writers]
            if edge:
                scores[:, writers, first:] = fact_products(delta[:, writers], grads, level)
            else:
                scores[:, writers] = fact_products(delta[:, writers], grads, level)
        return scores / steps


def _first_reader_after(graph: Graph, writers: slice) -> int:
    """The first reader downstream of a group of writers (readers are numbered in forward order)."""
    if writers.start == 0:
        return 0
    later = graph.valid[writers.start]  # the readers a writer feeds are a suffix of the reader order
    return int(later.argmax())


def _requiring_grad(tensor: torch.Tensor, hook: object) -> torch.Tensor:
    return tensor.detach().requires_grad_(True)


def _set_output(
    value: torch.Tensor, per_head: bool, grads: torch.Tensor | None
) -> Callable[..., torch.Tensor]:
    """A hook that replaces a group's output by `value` `[batch, n, pos, d]` as a fresh leaf (and, given
    `grads`, adds the leaf's gradient there)."""

    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        leaf = from_batch_major(value, per_head).contiguous().requires_grad_(True)
        if grads is not None:

            def on_grad(grad: torch.Tensor) -> None:
                grads.add_(batch_major(grad, per_head))

            leaf.register_hook(on_grad)
        return leaf

    return hook
