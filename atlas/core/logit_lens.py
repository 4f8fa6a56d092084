"""Logit lens over components: where in the model a target token reaches the top ranks.

Any vector in the residual basis (one head's result, one MLP's output, the residual stream after a layer)
is read as if it were the final residual: passed through the model's final norm and unembedding. The
norm is applied to the vector alone (the classic logit lens, nostalgebraist 2020), so a component is
judged by the direction it writes, not by its share of the final residual's scale.

Ranks are 1-based: 1 + the number of vocabulary tokens with a strictly higher logit (ties favour the
target), so rank 1 is the top prediction. Probabilities are the softmax over the projected logits.
For the residual after the last layer the lens is exactly the model's own output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from atlas.core.hooks import mlp_out_hook, result_hook
from atlas.core.models import LoadedModel

Kind = Literal["input", "head", "mlp", "resid"]
Prompt = str | Sequence[int]


@dataclass(frozen=True)
class ComponentRank:
    """The target's rank and probability when one component's output is read through the lens.

    Names follow the graph's: `a{L}.h{H}` (a head's result), `m{L}` (an MLP's output), `input` (the
    embeddings, layer -1) and `r{L}` (the residual stream after layer L)."""

    name: str
    layer: int
    kind: Kind
    rank: int  # 1 = top
    prob: float

    def to_dict(self) -> dict[str, Any]:
        from atlas.spec.json_safe import finite

        return dict(finite(asdict(self)))


def prompt_tokens(model: LoadedModel, prompt: Prompt) -> torch.Tensor:
    """`[1, pos]` token ids of a prompt (text is encoded with the model's BOS convention)."""
    ids = model.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise ValueError("the prompt has no tokens")
    return torch.tensor([ids], device=model.device)


@torch.no_grad()
def lens_logits(model: LoadedModel, vectors: torch.Tensor) -> torch.Tensor:
    """Logits `[..., vocab]` of vectors `[..., d_model]` read through the final norm and unembedding."""
    flat = vectors.reshape(1, -1, vectors.shape[-1])
    logits = model.bridge.unembed(model.bridge.ln_final(flat))
    return logits.reshape(*vectors.shape[:-1], logits.shape[-1])


def target_rank_prob(logits: torch.Tensor, target_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based rank `[...]` and probability `[...]` of one token under logits `[..., vocab]`."""
    target = logits[..., target_token_id : target_token_id + 1]
    rank = (logits > target).sum(-1) + 1
    prob = logits.float().softmax(-1)[..., target_token_id]
    return rank, prob


@torch.no_grad()
def _cache(model: LoadedModel, tokens: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    wanted = set(names)
    _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    return {name: cache[name] for name in names}


def _rows(
    model: LoadedModel,
    entries: list[tuple[str, int, Kind]],
    vectors: torch.Tensor,
    target_token_id: int,
) -> list[ComponentRank]:
    rank, prob = target_rank_prob(lens_logits(model, vectors), target_token_id)
    return [
        ComponentRank(name, layer, kind, int(r), float(p))
        for (name, layer, kind), r, p in zip(entries, rank.tolist(), prob.tolist(), strict=True)
    ]


def _check_target(model: LoadedModel, target_token_id: int) -> None:
    vocab = int(model.bridge.cfg.d_vocab)
    if not 0 <= target_token_id < vocab:
        raise ValueError(f"target token id {target_token_id} is outside the vocabulary (0..{vocab - 1})")


def component_ranks(
    model: LoadedModel, prompt: Prompt, target_token_id: int, position: int = -1
) -> list[ComponentRank]:
    """The target's lens rank for every head's result and every MLP's output at `position` (default:
    the last prompt token), in forward order: layer 0's heads, then its MLP, then layer 1's, ..."""
    _check_target(model, target_token_id)
    tokens = prompt_tokens(model, prompt)
    names = [hook for layer in range(model.n_layers) for hook in (result_hook(layer), mlp_out_hook(layer))]
    cache = _cache(model, tokens, names)
    entries: list[tuple[str, int, Kind]] = []
    vectors: list[torch.Tensor] = []
    for layer in range(model.n_layers):
        heads = cache[result_hook(layer)][0, position]  # [head, d_model]
        entries += [(f"a{layer}.h{head}", layer, "head") for head in range(heads.shape[0])]
        vectors += list(heads)
        entries.append((f"m{layer}", layer, "mlp"))
        vectors.append(cache[mlp_out_hook(layer)][0, position])
    return _rows(model, entries, torch.stack(vectors), target_token_id)


def residual_ranks(
    model: LoadedModel, prompt: Prompt, target_token_id: int, position: int = -1
) -> list[ComponentRank]:
    """The target's lens rank for the residual stream at `position`: the input embeddings (`input`),
    then after each layer (`r0` .. `r{n_layers-1}`; the last one is the model's own prediction)."""
    _check_target(model, target_token_id)
    tokens = prompt_tokens(model, prompt)
    names = ["blocks.0.hook_resid_pre"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)
    ]
    cache = _cache(model, tokens, names)
    entries: list[tuple[str, int, Kind]] = [("input", -1, "input")]
    entries += [(f"r{layer}", layer, "resid") for layer in range(model.n_layers)]
    vectors = torch.stack([cache[name][0, position] for name in names])
    return _rows(model, entries, vectors, target_token_id)


def first_top(ranks: Sequence[ComponentRank], k: int = 1) -> ComponentRank | None:
    """The first entry (in forward order) whose rank is at most k, or None."""
    return next((row for row in ranks if row.rank <= k), None)
