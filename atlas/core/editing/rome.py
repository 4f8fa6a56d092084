"""ROME (Meng et al., "Locating and Editing Factual Associations in GPT", NeurIPS 2022): a rank-one
update of one MLP's output projection W so that the subject's key k* maps to a new value.

1. Key: k* is the MLP's hidden activation (the input of W) at the subject's last token, averaged over
   the prompt preceded by a few fixed context prefixes (ROME samples its prefixes from the model; fixed
   ones keep edits reproducible).
2. Value: a vector delta added to the MLP's output at the subject's last token is optimized (Adam) to
   maximize the new object's log-probability after the prompts, plus `kl_factor` times the KL divergence
   of the next-token distribution after "{subject} is a" from the unedited model's (so the subject's
   other properties stay put), plus `weight_decay` * ||delta||^2 / ||v||^2, with ||delta|| clamped to
   `clamp_norm` * ||v||, v = W k* + b the original value. The target value is v* = v + delta.
3. Update: W' = W + delta (C^-1 k*)^T / (k*^T C^-1 k*), C = E[k k^T] over an offline text sample
   (covariance.py). Then W' k* = W k* + delta, so the MLP outputs v* for k*, and keys orthogonal to
   k* under C are the least disturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atlas.core.editing.base import (
    EditParams,
    EditRequest,
    WeightUpdate,
    mlp_hooks,
    mlp_out_weight,
    object_ids,
    plain_copy,
)
from atlas.core.editing.covariance import KeyCovariance, key_covariance
from atlas.core.editing.scoring import one_batch
from atlas.core.metrics import object_logprob
from atlas.core.models import LoadedModel

# Fixed context prefixes the key and value are averaged over; the first (none) is the prompt itself.
CONTEXT_PREFIXES = (
    "",
    "The following is a short note. ",
    "I read this somewhere yesterday. ",
    "Here is what the book says. ",
    "According to the records, ",
    "As everyone knows, ",
    "In the article it was written that ",
    "My teacher once told us that ",
    "It is often said that ",
    "Note: ",
)
KL_TEMPLATE = "{} is a"


def subject_last_index(model: LoadedModel, text: str, start: int, end: int) -> int:
    """Position, in `model.encode(text)`, of the last token overlapping characters [start, end)."""
    encoded = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    index = max(i for i, (first, _) in enumerate(offsets) if first < end)
    bos = 1 if len(model.encode(text)) == len(offsets) + 1 else 0
    return index + bos


def contexts(model: LoadedModel, request: EditRequest, n_prefixes: int) -> list[tuple[list[int], int]]:
    """(token ids, subject's last-token position) of the prompt after each context prefix."""
    out = []
    for prefix in CONTEXT_PREFIXES[: min(n_prefixes, len(CONTEXT_PREFIXES))]:
        text = prefix + request.prompt
        start = len(prefix) + request.prompt.index(request.subject)
        out.append((model.encode(text), subject_last_index(model, text, start, start + len(request.subject))))
    return out


def _position_mask(shape: torch.Size, positions: list[int], device: torch.device) -> torch.Tensor:
    mask = torch.zeros(shape[0], shape[1], 1, device=device)
    mask[torch.arange(shape[0]), torch.tensor(positions)] = 1.0
    return mask


@torch.no_grad()
def compute_key(
    model: LoadedModel, plain: nn.Module, request: EditRequest, params: EditParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """k* `[d_mlp]` (the mean key at the subject's last token over the contexts) and the original MLP
    output there averaged the same way, v = W k* + b `[d_model]`."""
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []

    def record_value(value: torch.Tensor) -> torch.Tensor:
        values.append(value)
        return value

    for ids, position in contexts(model, request, params.n_prefixes):
        with mlp_hooks(plain, mlp_out_weight(model, params.layer), keys.append, record_value):
            plain(torch.tensor([ids], device=model.device))
        keys[-1], values[-1] = keys[-1][0, position], values[-1][0, position]
    return torch.stack(keys).mean(0), torch.stack(values).mean(0)


def compute_delta(
    model: LoadedModel, plain: nn.Module, request: EditRequest, params: EditParams, value: torch.Tensor
) -> tuple[torch.Tensor, list[float], int]:
    """The optimized delta `[d_model]` added to the MLP output at the subject, the objective at each
    evaluation, and the number of optimizer steps taken (fewer than `steps` once the NLL is below
    `stop_loss`)."""
    assert params.steps is not None and params.lr is not None
    mlp = mlp_out_weight(model, params.layer)
    target = tuple(object_ids(model, request.target_new))
    rows = contexts(model, request, params.n_prefixes)
    batch = one_batch([(tuple(ids), target) for ids, _ in rows], model)
    subject_at = {tuple(ids): position for ids, position in rows}
    mask = _position_mask(batch.clean.shape, [subject_at[p.prompt_ids] for p in batch.pairs], model.device)
    kl_text = KL_TEMPLATE.format(request.subject)
    kl_tokens = torch.tensor([model.encode(kl_text)], device=model.device)
    kl_position = subject_last_index(model, kl_text, 0, len(request.subject))
    kl_mask = _position_mask(kl_tokens.shape, [kl_position], model.device)
    with torch.no_grad():
        kl_reference = plain(kl_tokens).logits[0, -1].log_softmax(-1)

    delta = torch.zeros_like(value, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=params.lr)
    max_norm = params.clamp_norm * float(value.norm())
    n_tokens = batch.target_mask.sum(-1)
    losses: list[float] = []
    steps = 0
    row_mask = mask

    def add_delta(out: torch.Tensor) -> torch.Tensor:
        return out + row_mask * delta

    with mlp_hooks(plain, mlp, on_value=add_delta):
        for _ in range(params.steps):
            optimizer.zero_grad()
            row_mask = mask
            nll = -(object_logprob(plain(batch.clean).logits, batch) / n_tokens).mean()
            row_mask = kl_mask
            kl_logprobs = plain(kl_tokens).logits[0, -1].log_softmax(-1)
            kl = torch.nn.functional.kl_div(kl_logprobs, kl_reference, log_target=True, reduction="sum")
            decay = delta.pow(2).sum() / value.pow(2).sum()
            loss = nll + params.kl_factor * kl + params.weight_decay * decay
            losses.append(float(loss.detach()))
            if float(nll.detach()) < params.stop_loss:
                break
            loss.backward()
            optimizer.step()
            steps += 1
            with torch.no_grad():
                norm = float(delta.norm())
                if norm > max_norm:
                    delta.mul_(max_norm / norm)
    return delta.detach(), losses, steps


def rank_one_update(
    key: torch.Tensor, delta: torch.Tensor, covariance: torch.Tensor, ridge: float
) -> torch.Tensor:
    """delta (C^-1 k)^T / (k^T C^-1 k) `[d_model, d_mlp]`, C with a ridge of `ridge` * mean(diag C)."""
    c = covariance.double()
    c = c + ridge * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    k = key.double().to(c.device)
    whitened = torch.linalg.solve(c, k)
    return torch.outer(delta.double().to(c.device), whitened) / (whitened @ k)


@dataclass
class RomeUpdate:
    key: torch.Tensor  # k* [d_mlp]
    value: torch.Tensor  # v* = W k* + b + delta [d_model]: what the edited MLP outputs for k*
    delta: torch.Tensor  # [d_model]
    weight: torch.Tensor  # the new W, in the model's stored layout
    covariance: KeyCovariance
    losses: list[float]
    steps: int


def compute_update(
    model: LoadedModel, request: EditRequest, params: EditParams, plain: nn.Module | None = None
) -> RomeUpdate:
    """ROME's key, value and new weight for one request (params resolved), computed on `plain` (a
    `plain_copy` of the model, made here when not given); neither model is written to."""
    plain = plain_copy(model) if plain is None else plain
    mlp = mlp_out_weight(model, params.layer)
    key, value = compute_key(model, plain, request, params)
    covariance = key_covariance(model, params.layer, params.cov_tokens, plain)
    delta, losses, steps = compute_delta(model, plain, request, params, value)
    matrix = mlp.matrix(model.weights)
    update = rank_one_update(key, delta, covariance.matrix, params.cov_ridge)
    new_matrix = (matrix.double() + update.to(matrix.device)).to(matrix.dtype)
    return RomeUpdate(key, value + delta, delta, mlp.stored(new_matrix), covariance, losses, steps)


def run(model: LoadedModel, plain: nn.Module, request: EditRequest, params: EditParams) -> WeightUpdate:
    result = compute_update(model, request, params, plain)
    name = mlp_out_weight(model, params.layer).name
    return WeightUpdate(
        new_weights={name: result.weight},
        steps_run=result.steps,
        losses=result.losses,
        details={
            "key_norm": float(result.key.norm()),
            "value_norm": float((result.value - result.delta).norm()),
            "delta_norm": float(result.delta.norm()),
            "covariance": {
                "sample": result.covariance.sample,
                "sample_sha256": result.covariance.sample_sha256,
                "n_tokens": result.covariance.n_tokens,
                "ridge": params.cov_ridge,
            },
            "context_prefixes": min(params.n_prefixes, len(CONTEXT_PREFIXES)),
        },
    )
