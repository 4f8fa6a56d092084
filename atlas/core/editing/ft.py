"""FT-M (Zhang et al., "A Comprehensive Study of Knowledge Editing for Large Language Models", 2024;
EasyEdit's FT-M, the fine-tuning baseline of Yao et al. 2024): fine-tune one MLP's output projection on
the edit prompt with the loss masked to the new object's tokens (mean cross-entropy of those tokens,
teacher-forced, given the prompt), Adam, a bounded number of steps.

The change dW is trained as a separate tensor whose contribution dW k is added to the MLP's output
through a hook (k: the MLP's hidden activation), which is exactly the forward pass of W + dW (and Adam
on dW from zero takes the same steps as Adam on W): no model is written to, and W + dW is returned.
"""

from __future__ import annotations

import torch
from torch import nn

from atlas.core.editing.base import (
    EditParams,
    EditRequest,
    WeightUpdate,
    mlp_hooks,
    mlp_out_weight,
    object_ids,
)
from atlas.core.editing.scoring import one_batch
from atlas.core.metrics import object_logprob
from atlas.core.models import LoadedModel


def run(model: LoadedModel, plain: nn.Module, request: EditRequest, params: EditParams) -> WeightUpdate:
    assert params.steps is not None and params.lr is not None
    mlp = mlp_out_weight(model, params.layer)
    matrix = mlp.matrix(model.weights)  # [d_model, d_mlp]
    batch = one_batch(
        [(tuple(model.encode(request.prompt)), tuple(object_ids(model, request.target_new)))], model
    )
    change = torch.zeros_like(matrix, requires_grad=True)
    optimizer = torch.optim.Adam([change], lr=params.lr)
    keys: list[torch.Tensor] = []

    def add_change(value: torch.Tensor) -> torch.Tensor:
        return value + keys.pop() @ change.T

    losses: list[float] = []
    steps = 0
    with mlp_hooks(plain, mlp, on_key=keys.append, on_value=add_change):
        for _ in range(params.steps):
            optimizer.zero_grad()
            logits = plain(batch.clean).logits
            loss = -(object_logprob(logits, batch) / batch.target_mask.sum(-1)).mean()
            losses.append(float(loss.detach()))
            if losses[-1] < params.stop_loss:
                break
            loss.backward()
            optimizer.step()
            steps += 1
    new_matrix = (matrix + change.detach()).to(matrix.dtype)
    return WeightUpdate(
        new_weights={mlp.name: mlp.stored(new_matrix)},
        steps_run=steps,
        losses=losses,
        details={"change_max_abs": float(change.detach().abs().max())},
    )
