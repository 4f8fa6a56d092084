"""Hook points of a TransformerBridge that the graph's writers and readers map to, and hook factories.

Writers: `blocks.0.hook_in` (the input: embeddings, plus positions where the model adds them),
`blocks.{L}.attn.hook_result` (`[batch, pos, head, d_model]`), `blocks.{L}.mlp.hook_out`.
Readers: `blocks.{L}.attn.hook_{q,k,v}_input` (`[batch, pos, head, d_model]`, each head's own copy of
the residual stream), `blocks.{L}.hook_mlp_in`, and `ln_final.hook_in` for the logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atlas.core.graph import QKV, Graph

Hook = tuple[str, Callable[..., torch.Tensor | None]]
INPUT_HOOK = "blocks.0.hook_in"
LOGITS_IN_HOOK = "ln_final.hook_in"


def result_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_result"


def mlp_out_hook(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_out"


def qkv_input_hook(layer: int, which: str) -> str:
    return f"blocks.{layer}.attn.hook_{which}_input"


def mlp_in_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_in"


def writer_slices(graph: Graph) -> list[tuple[str, slice, bool]]:
    """(hook name, writer indices, per-head?) for every writer hook, in forward order."""
    out = [(INPUT_HOOK, slice(0, 1), False)]
    for layer in range(graph.n_layers):
        first = graph.head_writer(layer, 0)
        out.append((result_hook(layer), slice(first, first + graph.n_heads), True))
        out.append((mlp_out_hook(layer), slice(graph.mlp_writer(layer), graph.mlp_writer(layer) + 1), False))
    return out


def reader_slices(graph: Graph) -> list[tuple[str, slice, bool]]:
    """(hook name, reader indices, per-head?) for every reader hook, in forward order."""
    out = []
    for layer in range(graph.n_layers):
        for which_index, which in enumerate(QKV):
            first = graph.qkv_reader(layer, which_index, 0)
            out.append((qkv_input_hook(layer, which), slice(first, first + graph.n_heads), True))
        out.append((mlp_in_hook(layer), slice(graph.mlp_reader(layer), graph.mlp_reader(layer) + 1), False))
    out.append((LOGITS_IN_HOOK, slice(graph.logits_reader, graph.logits_reader + 1), False))
    return out


def batch_major(tensor: torch.Tensor, per_head: bool) -> torch.Tensor:
    """A hook's `[batch, pos, head, d]` or `[batch, pos, d]` -> `[batch, n, pos, d]`."""
    return tensor.permute(0, 2, 1, 3) if per_head else tensor.unsqueeze(1)


def from_batch_major(tensor: torch.Tensor, per_head: bool) -> torch.Tensor:
    """Inverse of `batch_major`."""
    return tensor.permute(0, 2, 1, 3) if per_head else tensor.squeeze(1)
