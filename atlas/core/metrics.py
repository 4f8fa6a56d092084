"""What the circuit is asked to explain, per fact: functions of logits `[batch, pos, vocab]`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from atlas.core.pairs import Batch
from atlas.spec.params import METRICS

Metric = Callable[[torch.Tensor, Batch], torch.Tensor]  # -> [batch]


def object_logprob(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Log-probability of the whole clean object (the sum over all its tokens, teacher-forced)."""
    rows = torch.arange(batch.size, device=logits.device)[:, None]
    picked = logits[rows, batch.target_pos].log_softmax(-1)  # [batch, k, vocab]
    token_logprobs = picked.gather(-1, batch.target_tok[..., None]).squeeze(-1)
    return (token_logprobs * batch.target_mask).sum(-1)


def logit_difference(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Logit of the clean object's first token minus the corrupt object's, at the last prompt token."""
    rows = torch.arange(batch.size, device=logits.device)
    final = logits[rows, batch.target_pos[:, 0]]  # [batch, vocab]
    return final[rows, batch.target_tok[:, 0]] - final[rows, batch.foil_tok]


def get_metric(name: str) -> Metric:
    if name == "logprob":
        return object_logprob
    if name == "logit-diff":
        return logit_difference
    raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")


def hits_at_k(logits: torch.Tensor, batch: Batch, k: int = 10) -> torch.Tensor:
    """Bool [batch]: every object token ranks in the top k where it is predicted (teacher-forced).
    For single-token objects this is the paper's Hit@10."""
    rows = torch.arange(batch.size, device=logits.device)[:, None]
    picked = logits[rows, batch.target_pos]  # [batch, k_tokens, vocab]
    target = picked.gather(-1, batch.target_tok[..., None])
    rank = (picked > target).sum(-1)  # tokens strictly above the object token
    return ((rank < k) | ~batch.target_mask).all(-1)
