"""Logits only where a metric reads them.

A forward pass stops at the final norm's input (`ln_final.hook_in`, after every hook there has run), and
the final norm and unembedding are applied at the object's target positions alone: `[batch, k, vocab]`
instead of `[batch, pos, vocab]`. The unembedding is a large share of a small model's forward (SmolLM2:
49,152 x 576), and the metrics read one to a few positions per prompt.

`readout_batch` gives the batch whose target positions index that tensor (0..k-1), so the metrics of
`atlas.core.metrics` apply to it unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from atlas.core.hooks import LOGITS_IN_HOOK, Hook
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch


class StopForward(Exception):
    """Raised from a hook to end a forward pass once what it needs is captured."""


def capture_at(model: LoadedModel, tokens: torch.Tensor, hook_name: str, hooks: Sequence[Hook] = ()) -> Any:
    """The tensor at `hook_name` after `hooks` (and any others there) have run; the pass stops there."""
    captured: list[torch.Tensor] = []

    def grab(tensor: torch.Tensor, hook: object) -> None:
        captured.append(tensor)
        raise StopForward

    with contextlib.suppress(StopForward):
        model.bridge.run_with_hooks(tokens, fwd_hooks=[*hooks, (hook_name, grab)], return_type=None)
    if not captured:
        raise RuntimeError(f"the forward pass never reached {hook_name}")
    return captured[0]


def readout_logits(
    model: LoadedModel, tokens: torch.Tensor, batch: Batch, hooks: Sequence[Hook] = ()
) -> torch.Tensor:
    """Logits `[rows, k, vocab]` at `batch.target_pos` of a forward pass over `tokens` with `hooks`.
    `tokens` may hold several copies of the batch stacked on the batch axis (bulk evaluation): row i reads
    the target positions of batch row i % batch.size."""
    residual = capture_at(model, tokens, LOGITS_IN_HOOK, hooks)  # [rows, pos, d_model]
    copies = tokens.shape[0] // batch.size
    positions = batch.target_pos.repeat(copies, 1)  # [rows, k]
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
    return final_logits(model, residual[rows, positions])


def final_logits(model: LoadedModel, residual: torch.Tensor) -> torch.Tensor:
    """The final norm and unembedding of residual vectors `[..., d_model]` (and Gemma-style soft-capping,
    where the model's config asks for it), as the model's own forward applies them."""
    logits = model.bridge.unembed(model.bridge.ln_final(residual))
    cap = getattr(getattr(model.hf_model, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def readout_batch(batch: Batch, copies: int = 1) -> Batch:
    """`batch` as the metrics see readout logits: target positions 0..k-1 (and the batch repeated `copies`
    times on the batch axis, for bulk evaluation)."""
    k = batch.target_pos.shape[1]
    positions = torch.arange(k, device=batch.target_pos.device).expand(batch.size * copies, k)
    if copies == 1:
        return dataclasses.replace(batch, target_pos=positions)
    return dataclasses.replace(
        batch,
        clean=batch.clean.repeat(copies, 1),
        corrupt=batch.corrupt.repeat(copies, 1),
        lengths=batch.lengths.repeat(copies),
        target_pos=positions,
        target_tok=batch.target_tok.repeat(copies, 1),
        target_mask=batch.target_mask.repeat(copies, 1),
        foil_tok=batch.foil_tok.repeat(copies),
        pairs=list(batch.pairs) * copies,
    )
