"""A peak-memory budget for discovery: how many facts one attribution or evaluation pass may hold.

Each pass's peak is estimated from the model's shape, per fact, for `positions` tokens and `k` target
positions (float32, 4 bytes a value):

* attribution: the buffers `[n_writers, pos, d]` of clean outputs, ablated outputs and one temporary of
  that size, the summed gradients `[n_slots, pos, d]` (readers at edge level, writers at node level; twice
  for EAP-IG over activations, which keeps the clean run's besides each group's) and a temporary copy of
  them for the score product; and what autograd saves for one backward: per layer, each head's copy of
  the residual stream for q, k and v (twice behind a LayerNorm, which saves its output too), 4 x d_mlp,
  5 x d_model and the attention pattern (2 x heads x pos), plus 3 x vocab at each target position
  (logits, log-softmax, gradient). Measured against what `torch.autograd.graph.saved_tensors_hooks`
  sees on GPT-2 and Llama shapes, these terms cover the saved tensors to within a few percent;
* evaluation (per fact and circuit stacked in a patched pass): the ablated outputs and one circuit's
  differences `[n_writers, pos, d]`, one layer's no-grad working set and the readout logits.

Measured peaks per fact (VmHWM, batches of 2 to 16 on 2 CPU cores) ran to 1.24x these terms on a GPT-2
shape (allocator slack, the backward's transient gradients) and 0.83x on SmolLM2, so attribution's estimate
is taken `ATTRIBUTION_MARGIN` times. The budget covers the whole process: what is resident before the pass
(the weights, the libraries) is taken from it first, then passes are cut to the facts the rest holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from atlas.core.graph import Graph
from atlas.core.models import LoadedModel
from atlas.spec.memory import format_bytes
from atlas.spec.params import DiscoveryError

FLOAT = 4
# What a CPU process holds besides the weights once torch, transformers and the bridge are imported.
RUNTIME_BYTES = 600 * 2**20
ATTRIBUTION_MARGIN = 1.3


@dataclass
class MemoryBudget:
    """`total` bytes for the whole process, `resident` of them already taken (weights, runtime), `held` by
    caches charged to it since (evaluators' ablated outputs)."""

    total: int
    resident: int
    held: int = 0

    @property
    def free(self) -> int:
        return self.total - self.resident - self.held

    def reserve(self, nbytes: int, working: int) -> bool:
        """Charge a cache of `nbytes` if it fits beside a pass needing `working` bytes."""
        if nbytes + working > self.free:
            return False
        self.held += nbytes
        return True


def discovery_budget(model: LoadedModel, max_memory: int | None = None) -> MemoryBudget | None:
    """The budget of a run on `model`: `max_memory` bytes, else ATLAS_MAX_MEMORY_MB, else none."""
    if max_memory is None:
        from atlas.spec.config import get_settings

        max_memory = get_settings().max_memory_mb * 2**20 or None
    if max_memory is None:
        return None
    budget = MemoryBudget(max_memory, resident_bytes(model))
    if budget.free <= 0:  # refused before any work, not after filtering
        raise DiscoveryError(
            f"a memory budget of {format_bytes(budget.total)} cannot hold one fact's work: about "
            f"{format_bytes(budget.resident)} is resident already (the weights, the runtime); give more "
            "(--max-memory, ATLAS_MAX_MEMORY_MB)",
            field="max_memory",
        )
    return budget


def resident_bytes(model: LoadedModel) -> int:
    """What the process holds before a pass: on CUDA the allocated device memory; on the CPU the larger of
    the resident set and the weights plus the runtime's share."""
    if model.device.type == "cuda":
        return int(torch.cuda.memory_allocated(model.device))
    tensors = (*model.hf_model.parameters(), *model.hf_model.buffers())
    weights = sum(t.numel() * t.element_size() for t in tensors)
    return max(weights + RUNTIME_BYTES, _rss_bytes())


def _rss_bytes() -> int:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def attribution_fact_bytes(
    model: LoadedModel, graph: Graph, positions: int, k: int, level: str, method: str
) -> int:
    """Estimated peak bytes one fact adds to an attribution pass (see the module's docstring)."""
    cfg = model.bridge.cfg
    d = model.d_model
    slots = graph.n_readers if level == "edge" else graph.n_writers
    if method == "eap-ig-activations":
        slots *= 2
    buffers = (3 * graph.n_writers + 2 * slots) * d * positions
    head_copies = 2 if str(cfg.normalization_type).startswith("LN") else 1
    heads = model.n_heads
    per_layer = head_copies * 3 * heads * d + 4 * int(cfg.d_mlp) + 5 * d + 2 * heads * positions
    saved = model.n_layers * per_layer * positions + 3 * k * int(cfg.d_vocab)
    return int(ATTRIBUTION_MARGIN * FLOAT * (buffers + saved))


def evaluation_fact_bytes(model: LoadedModel, graph: Graph, positions: int, k: int) -> int:
    """Estimated peak bytes of one fact under one circuit in a patched pass (ablated outputs included)."""
    cfg = model.bridge.cfg
    d = model.d_model
    activations = 2 * graph.n_writers * d + 6 * model.n_heads * d + 4 * int(cfg.d_mlp) + 4 * d
    return FLOAT * (activations * positions + 3 * k * int(cfg.d_vocab))


def facts_per_pass(budget: MemoryBudget, fact_bytes: int, what: str) -> int:
    """How many facts a pass needing `fact_bytes` each may hold; DiscoveryError when not even one."""
    n = budget.free // max(fact_bytes, 1)
    if n < 1:
        raise DiscoveryError(
            f"a memory budget of {format_bytes(budget.total)} cannot hold one fact's {what}: about "
            f"{format_bytes(budget.resident + budget.held)} is resident already (weights, runtime, caches) "
            f"and one fact needs about {format_bytes(fact_bytes)} more; give at least "
            f"{format_bytes(budget.resident + budget.held + fact_bytes)} (--max-memory, ATLAS_MAX_MEMORY_MB)",
            field="max_memory",
        )
    return int(n)
