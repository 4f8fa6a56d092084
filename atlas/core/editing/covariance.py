"""The second moment C = E[k k^T] of an MLP's keys (its hidden activation, the input of its output
projection) over an offline text sample, which ROME's update is whitened by.

The sample is English prose every machine with Python has: the docstrings of a fixed list of standard
library modules and of their public classes and functions, in that order, split into paragraphs, with
code examples, indented blocks and short or symbol-heavy paragraphs dropped, duplicates removed. It is
about 100,000 characters (about 20,000 SmolLM2 tokens) on Python 3.11; its sha256 is recorded with every
edit, since docstrings change between Python versions. ROME used 100,000 Wikipedia samples; a few
thousand tokens (default 4,096, `EditParams.cov_tokens`) give a full-rank estimate for SmolLM2's 1,536
keys, and a small ridge keeps its inverse stable.

Covariances are kept in memory only (nothing is written to disk), keyed by the model's weights sha256,
the layer, the number of tokens and the sample's sha256, so later edits of the same model and layer in
a process reuse them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from atlas.core.editing.base import EditError, mlp_hooks, mlp_out_weight, plain_copy
from atlas.core.models import LoadedModel

SAMPLE_MODULES = (
    "argparse",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "email.message",
    "functools",
    "http.client",
    "json",
    "logging",
    "pathlib",
    "subprocess",
    "threading",
    "unittest",
    "zipfile",
    "tarfile",
    "socket",
    "random",
    "statistics",
    "textwrap",
    "string",
    "calendar",
    "shutil",
    "tempfile",
    "heapq",
    "contextlib",
    "dataclasses",
    "enum",
    "fractions",
    "configparser",
    "pickle",
    "queue",
    "sched",
    "signal",
    "struct",
    "uuid",
    "weakref",
)
SAMPLE_NAME = "python-stdlib-docstrings"
WINDOW = 128  # tokens per sequence the sample is cut into
_CACHE_SIZE = 8


def _paragraphs(doc: str) -> list[str]:
    kept = []
    for block in re.split(r"\n\s*\n", doc):
        lines = block.splitlines()
        if any(line.lstrip().startswith((">>>", "...")) or line.startswith("    ") for line in lines):
            continue  # code examples and indented tables
        text = " ".join(line.strip() for line in lines)
        if len(text) < 80 or sum(c.isalpha() or c == " " for c in text) < 0.85 * len(text):
            continue
        kept.append(text)
    return kept


@lru_cache(maxsize=1)
def offline_text() -> str:
    """The covariance text sample (see the module's docstring)."""
    seen: dict[str, None] = {}
    for name in SAMPLE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a stripped-down Python; the sample's sha256 records the difference
            continue
        members = [getattr(module, attr) for attr in sorted(vars(module)) if not attr.startswith("_")]
        for item in [module, *members]:
            own = item is module or getattr(item, "__module__", None) == module.__name__
            if own and (inspect.isclass(item) or inspect.isfunction(item) or inspect.ismodule(item)):
                for paragraph in _paragraphs(inspect.getdoc(item) or ""):
                    seen.setdefault(paragraph, None)
    return "\n\n".join(seen)


def text_sha256() -> str:
    return hashlib.sha256(offline_text().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyCovariance:
    matrix: torch.Tensor  # [d_mlp, d_mlp] float64, E[k k^T] (uncentered, as in ROME)
    n_tokens: int
    sample: str
    sample_sha256: str


class _Stop(Exception):
    """Raised by a hook once the key is recorded: later layers need not run."""


_cache: OrderedDict[tuple[str, int, int, str], KeyCovariance] = OrderedDict()


def key_covariance(
    model: LoadedModel, layer: int, n_tokens: int = 4096, plain: nn.Module | None = None
) -> KeyCovariance:
    """E[k k^T] of layer `layer`'s MLP keys over the first `n_tokens` positions of the sample, computed
    on `plain` (a `plain_copy` of the model; made here when not given) unless cached."""
    sha = text_sha256()
    cache_key = (model.weights_sha256, layer, n_tokens, sha)
    if cache_key in _cache:
        _cache.move_to_end(cache_key)
        return _cache[cache_key]
    ids = model.encode_continuation(offline_text())
    if len(ids) < n_tokens:
        raise EditError(
            f"the offline text sample has {len(ids)} tokens for model {model.name!r}, fewer than the "
            f"{n_tokens} asked for (cov-tokens)"
        )
    windows = torch.tensor(ids[:n_tokens][: n_tokens - n_tokens % WINDOW]).view(-1, WINDOW)
    rest = ids[windows.numel() : n_tokens]
    chunks = [windows] + ([torch.tensor([rest])] if rest else [])
    bos = model.tokenizer.bos_token_id if model.prepend_bos else None
    plain = plain_copy(model) if plain is None else plain
    total: torch.Tensor | None = None
    count = 0

    def record(tensor: torch.Tensor) -> None:
        nonlocal total, count
        keys = tensor[:, 1:] if bos is not None else tensor  # the BOS position is not sample text
        keys = keys.reshape(-1, keys.shape[-1]).double()
        total = keys.T @ keys if total is None else total + keys.T @ keys
        count += keys.shape[0]
        raise _Stop

    with torch.no_grad(), mlp_hooks(plain, mlp_out_weight(model, layer), on_key=record):
        for chunk in chunks:
            for start in range(0, chunk.shape[0], 8):
                tokens = chunk[start : start + 8]
                if bos is not None:
                    tokens = torch.cat([torch.full((tokens.shape[0], 1), int(bos)), tokens], dim=1)
                with contextlib.suppress(_Stop):
                    plain(tokens.to(model.device))
    assert total is not None
    covariance = KeyCovariance((total / count).cpu(), count, SAMPLE_NAME, sha)
    _cache[cache_key] = covariance
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return covariance
