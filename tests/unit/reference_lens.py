"""An independent logit lens for the tests: the final norm and the unembedding written out from the Hugging
Face weights the model was loaded with (`LoadedModel.weights`, taken before the bridge wraps the model), in
float64; nothing from atlas.core.logit_lens or the bridge's own ln_final / unembed modules.

Llama: RMSNorm, x / sqrt(mean(x^2) + eps) * w. GPT-2: LayerNorm, (x - mean) / sqrt(var + eps) * w + b. Then
logits = normed @ W_U^T. Ranks are 1 + the number of tokens with a strictly higher logit."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch


def lens(model: Any, vectors: torch.Tensor) -> torch.Tensor:
    """Logits `[..., vocab]` (float64) of residual-basis vectors `[..., d_model]`."""
    weights, config = model.weights, model.hf_model.config
    x = vectors.detach().to(torch.float64)
    if "model.norm.weight" in weights:
        x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps)
        x = x * weights["model.norm.weight"].to(torch.float64)
    else:
        x = x - x.mean(-1, keepdim=True)
        x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + config.layer_norm_epsilon)
        x = x * weights["transformer.ln_f.weight"].to(torch.float64) + weights["transformer.ln_f.bias"].to(
            torch.float64
        )
    return x @ weights["lm_head.weight"].to(torch.float64).T


def rank_and_prob(logits: torch.Tensor, target: int) -> tuple[int, float]:
    """1-based rank and softmax probability of one token under one row of logits."""
    rank = 1 + sum(1 for value in logits.tolist() if value > float(logits[target]))
    return rank, float(logits.softmax(-1)[target])


def component_vectors(model: Any, ids: Sequence[int], position: int = -1) -> dict[str, torch.Tensor]:
    """Each head's result and each MLP's output at one position, by graph name (`a0.h1`, `m0`)."""
    names = [f"blocks.{layer}.attn.hook_result" for layer in range(model.n_layers)]
    names += [f"blocks.{layer}.mlp.hook_out" for layer in range(model.n_layers)]
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(torch.tensor([list(ids)]), names_filter=lambda n: n in names)
    out = {}
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            out[f"a{layer}.h{head}"] = cache[f"blocks.{layer}.attn.hook_result"][0, position, head]
        out[f"m{layer}"] = cache[f"blocks.{layer}.mlp.hook_out"][0, position]
    return out


def residual_vectors(model: Any, ids: Sequence[int], position: int = -1) -> dict[str, torch.Tensor]:
    """The residual stream at one position from the Hugging Face forward's own hidden states: `input`
    (the embeddings), then `r{L}` after each layer but the last (HF normalizes the last hidden state)."""
    with torch.no_grad():
        hidden = model.hf_model(torch.tensor([list(ids)]), output_hidden_states=True).hidden_states
    out = {"input": hidden[0][0, position]}
    for layer in range(model.n_layers - 1):
        out[f"r{layer}"] = hidden[layer + 1][0, position]
    return out


def summary(model: Any, prompts: Sequence[tuple[Sequence[int], int]], names: Sequence[str]) -> dict[str, Any]:
    """Per component: median, mean and best rank of the target, how often it is top, its mean probability."""
    rows: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    for ids, target in prompts:
        vectors = component_vectors(model, ids)
        for name in names:
            rows[name].append(rank_and_prob(lens(model, vectors[name]), target))
    return {
        name: {
            "median_rank": float(statistics.median(r for r, _ in values)),
            "mean_rank": statistics.fmean(r for r, _ in values),
            "best_rank": min(r for r, _ in values),
            "top1": sum(r == 1 for r, _ in values) / len(values),
            "mean_prob": statistics.fmean(p for _, p in values),
        }
        for name, values in rows.items()
    }
