"""EAP-IG over inputs (Hanna et al.): the gradient at each reader's input averaged over `steps` runs whose
input embeddings are interpolated from the corrupt to the clean prompt, alpha = k/steps for k = 1..steps
(a right Riemann sum, so steps = 1 is exactly EAP).

Cost per batch: one gradient-free corrupt forward, `steps` forward+backward passes (logits only at the
target positions), and one batched score product; gradients are summed across steps first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atlas.core.attribution.base import (
    ablated_outputs,
    accumulate_grads,
    backward_metric,
    fact_products,
    input_embeddings,
    masked_delta,
    record_writers,
)
from atlas.core.graph import Graph
from atlas.core.hooks import INPUT_HOOK, Hook, reader_slices, writer_slices
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch


class EAPIGInputs:
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
        shape = (batch.size, graph.n_writers, batch.clean.shape[1], model.d_model)
        clean = torch.empty(shape, device=batch.clean.device)
        # The corrupt prompt's embeddings start the integration path whatever the ablation.
        corrupt_input = input_embeddings(model, batch.corrupt)
        # Edges take the gradient at each reader's input, nodes at each writer's output.
        slots = reader_slices(graph) if level == "edge" else writer_slices(graph)
        n_slots = graph.n_readers if level == "edge" else graph.n_writers
        grads = torch.zeros(batch.size, n_slots, *shape[2:], device=clean.device)
        for step in range(steps, 0, -1):  # alpha = 1 first: that pass also records the clean activations
            hooks: list[Hook] = [(INPUT_HOOK, _interpolate(corrupt_input, step / steps))]
            if step == steps:
                hooks += record_writers(graph, clean)
            hooks += accumulate_grads(slots, grads)
            backward_metric(model, batch, metric, hooks)
        delta = masked_delta(ablated_outputs(model, graph, batch, ablation, clean), clean, batch)
        return fact_products(delta, grads, level) / steps


def _interpolate(corrupt_input: torch.Tensor, alpha: float) -> Callable[..., torch.Tensor]:
    def hook(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        if alpha == 1.0:
            return tensor.detach().requires_grad_(True)
        return (corrupt_input + alpha * (tensor.detach() - corrupt_input)).requires_grad_(True)

    return hook
