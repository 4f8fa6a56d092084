"""Hook points of a TransformerBridge that the graph's writers and readers map to, and hook factories.

Writers: `blocks.0.hook_in` (the input: embeddings, plus positions where the model adds them),
`blocks.{L}.attn.hook_result` (`[batch, pos, head, d_model]`), `blocks.{L}.mlp.hook_out`.
Readers: `blocks.{L}.attn.hook_{q,k,v}_input` (`[batch, pos, head, d_model]`, each head's own copy of
the residual stream), `blocks.{L}.hook_mlp_in`, and `ln_final.hook_in` for the logits.
Activation buffers are writer-major, `[n_writers, batch, pos, d_model]`, so one matmul scores all edges.
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


def as_major(tensor: torch.Tensor, per_head: bool) -> torch.Tensor:
    """`[batch, pos, head, d]` or `[batch, pos, d]` -> `[n, batch, pos, d]`."""
    return tensor.permute(2, 0, 1, 3) if per_head else tensor.unsqueeze(0)


def from_major(tensor: torch.Tensor, per_head: bool) -> torch.Tensor:
    """Inverse of `as_major`."""
    return tensor.permute(1, 2, 0, 3) if per_head else tensor.squeeze(0)


def record_writers(graph: Graph, buffer: torch.Tensor) -> list[Hook]:
    """Hooks that copy every writer's output into `buffer` `[n_writers, batch, pos, d]`."""

    def make(indices: slice, per_head: bool) -> Callable[..., None]:
        def hook(tensor: torch.Tensor, hook: object) -> None:
            buffer[indices] = as_major(tensor.detach(), per_head)

        return hook

    return [(name, make(indices, per_head)) for name, indices, per_head in writer_slices(graph)]
