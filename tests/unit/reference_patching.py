"""Independent references for circuit evaluation and edge attribution, written for the tests.

Nothing here imports atlas.core's graph, hooks, intervention, attribution, evaluation or metrics: the graph is
rebuilt from names, every hook is written out (transformer_lens hook points of the bridge), every sequence
runs alone and unpadded, and each quantity is computed by the simplest loop that defines it:

- an edge-patched run: each reader's input becomes its input in this run minus, for every upstream writer
  whose edge to it is not kept, (that writer's output in this run - its ablated output); in forward order,
  so a writer downstream of a patched reader contributes its changed output;
- a node-patched run: every head and MLP outside the kept set outputs its ablated value (the input never);
- integrated gradients: the input embeddings interpolated from corrupt to clean at alpha = k/m, k = 1..m,
  the gradient of the metric at each reader's input (edges) or writer's output (nodes) averaged over the m
  runs, and a score (ablated output - clean output) . mean gradient summed over positions.

The functions take the public objects (a LoadedModel, atlas.core.pairs.Pair, edge-name pairs), so the
production signatures can change without these references changing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Edge = tuple[str, str]  # (writer name, reader name), as in `a0.h1->a2.h3<q>`
PatchFn = Callable[[torch.Tensor, Any], torch.Tensor | None]

_HEAD = re.compile(r"a(\d+)\.h(\d+)$")
_MLP = re.compile(r"m(\d+)$")
_HEAD_INPUT = re.compile(r"a(\d+)\.h(\d+)<([qkv])>$")


# --------------------------------------------------------------------------------------------- the graph


def writer_names(n_layers: int, n_heads: int) -> list[str]:
    names = ["input"]
    for layer in range(n_layers):
        names += [f"a{layer}.h{head}" for head in range(n_heads)] + [f"m{layer}"]
    return names


def reader_names(n_layers: int, n_heads: int) -> list[str]:
    names = []
    for layer in range(n_layers):
        names += [f"a{layer}.h{head}<{which}>" for which in "qkv" for head in range(n_heads)]
        names.append(f"m{layer}")
    return [*names, "logits"]


def _writer_place(name: str) -> tuple[float, int]:
    """Where a writer's output enters the residual stream: (layer, 0 for heads, 1 for the MLP)."""
    if name == "input":
        return (-1, 2)
    if head := _HEAD.match(name):
        return (int(head[1]), 0)
    if mlp := _MLP.match(name):
        return (int(mlp[1]), 1)
    raise ValueError(name)


def _reader_place(name: str) -> tuple[float, int]:
    if name == "logits":
        return (math.inf, 0)
    if head := _HEAD_INPUT.match(name):
        return (int(head[1]), 0)
    if mlp := _MLP.match(name):
        return (int(mlp[1]), 1)
    raise ValueError(name)


def is_edge(writer: str, reader: str) -> bool:
    """A writer feeds a reader when it writes before the reader reads (heads of a layer feed its MLP)."""
    return _writer_place(writer) < _reader_place(reader)


def writer_hook(name: str) -> tuple[str, int | None]:
    """(hook point, head index or None) where a writer's output is seen."""
    if name == "input":
        return "blocks.0.hook_in", None
    if head := _HEAD.match(name):
        return f"blocks.{head[1]}.attn.hook_result", int(head[2])
    if mlp := _MLP.match(name):
        return f"blocks.{mlp[1]}.mlp.hook_out", None
    raise ValueError(name)


def reader_hook(name: str) -> tuple[str, int | None]:
    """(hook point, head index or None) of a reader's own copy of the residual stream."""
    if name == "logits":
        return "ln_final.hook_in", None
    if head := _HEAD_INPUT.match(name):
        return f"blocks.{head[1]}.attn.hook_{head[3]}_input", int(head[2])
    if mlp := _MLP.match(name):
        return f"blocks.{mlp[1]}.hook_mlp_in", None
    raise ValueError(name)


def _names(model: Any) -> tuple[list[str], list[str]]:
    return writer_names(model.n_layers, model.n_heads), reader_names(model.n_layers, model.n_heads)


def _slot(tensor: torch.Tensor, head: int | None) -> torch.Tensor:
    """One sequence's `[pos, d]` view of a hooked `[1, pos, d]` or `[1, pos, head, d]` tensor."""
    return tensor[0] if head is None else tensor[0, :, head]


def _group(names: Sequence[str], where: Callable[[str], tuple[str, int | None]]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for name in names:
        hook, head = where(name)
        grouped.setdefault(hook, []).append((name, head))
    return grouped


# ------------------------------------------------------------------------------------------- plain runs


def _tokens(ids: Sequence[int], model: Any) -> torch.Tensor:
    return torch.tensor([list(ids)], device=model.device)


@torch.no_grad()
def writer_outputs(model: Any, ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """Every writer's output `[pos, d]` on one unpadded sequence."""
    writers, _ = _names(model)
    out: dict[str, torch.Tensor] = {}

    def record(entries: list[Any]) -> PatchFn:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            for name, head in entries:
                out[name] = _slot(tensor, head).detach().clone()

        return hook

    hooks = [(point, record(entries)) for point, entries in _group(writers, writer_hook).items()]
    model.bridge.run_with_hooks(_tokens(ids, model), fwd_hooks=hooks, return_type=None)
    return out


@torch.no_grad()
def logits_of(model: Any, ids: Sequence[int]) -> torch.Tensor:
    return model.bridge(_tokens(ids, model), return_type="logits")[0]


def ablated_outputs(model: Any, pairs: Sequence[Any], ablation: str) -> list[dict[str, torch.Tensor]]:
    """Per pair (one batch of them), what each writer carries when ablated: the pair's corrupt run, zeros,
    or the mean of the clean outputs over every real token of the batch's pairs."""
    if ablation == "corrupt":
        return [writer_outputs(model, pair.corrupt_ids) for pair in pairs]
    clean = [writer_outputs(model, pair.clean_ids) for pair in pairs]
    if ablation == "zero":
        return [{name: torch.zeros_like(value) for name, value in run.items()} for run in clean]
    if ablation == "mean":
        mean = {name: torch.cat([run[name] for run in clean]).mean(0, keepdim=True) for name in clean[0]}
        return [{name: mean[name].expand_as(run[name]) for name in run} for run in clean]
    raise ValueError(ablation)


# ---------------------------------------------------------------------------------------- patched runs


@torch.no_grad()
def edge_patched_logits(
    model: Any, ids: Sequence[int], ablated: dict[str, torch.Tensor], kept: set[Edge]
) -> torch.Tensor:
    """Logits `[pos, vocab]` of one sequence when only the `kept` edges carry this run's values."""
    writers, readers = _names(model)
    seen: dict[str, torch.Tensor] = {}  # this run's writer outputs, in forward order

    def record(entries: list[Any]) -> PatchFn:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            for name, head in entries:
                seen[name] = _slot(tensor, head).detach().clone()

        return hook

    def patch(entries: list[Any]) -> PatchFn:
        def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
            tensor = tensor.clone()
            for reader, head in entries:
                upstream = [w for w in writers if is_edge(w, reader)]
                missing = [w for w in upstream if w not in seen]
                assert not missing, f"{reader} read before {missing} wrote"
                dropped = [w for w in upstream if (w, reader) not in kept]
                if dropped:
                    change = sum((seen[w] - ablated[w] for w in dropped), torch.zeros_like(seen[dropped[0]]))
                    _slot(tensor, head).sub_(change)
            return tensor

        return hook

    hooks = [(point, record(entries)) for point, entries in _group(writers, writer_hook).items()]
    hooks += [(point, patch(entries)) for point, entries in _group(readers, reader_hook).items()]
    return model.bridge.run_with_hooks(_tokens(ids, model), fwd_hooks=hooks, return_type="logits")[0]


@torch.no_grad()
def node_patched_logits(
    model: Any, ids: Sequence[int], ablated: dict[str, torch.Tensor], kept: set[str]
) -> torch.Tensor:
    """Logits `[pos, vocab]` with every head and MLP not in `kept` outputting its ablated value."""
    writers, _ = _names(model)

    def replace(entries: list[Any]) -> PatchFn:
        def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
            tensor = tensor.clone()
            for name, head in entries:
                if name not in kept:
                    _slot(tensor, head).copy_(ablated[name])
            return tensor

        return hook

    components = [w for w in writers if w != "input"]
    hooks = [(point, replace(entries)) for point, entries in _group(components, writer_hook).items()]
    return model.bridge.run_with_hooks(_tokens(ids, model), fwd_hooks=hooks, return_type="logits")[0]


# ------------------------------------------------------------------------------- metrics and evaluation


def object_logprob(logits: torch.Tensor, pair: Any) -> float:
    """log P(object) of one unpadded sequence, summed over the object's tokens (teacher-forced)."""
    start = len(pair.prompt_ids) - 1
    return sum(float(logits[start + k].log_softmax(-1)[token]) for k, token in enumerate(pair.object_ids))


def logit_difference(logits: torch.Tensor, pair: Any) -> float:
    final = logits[len(pair.prompt_ids) - 1]
    return float(final[pair.object_ids[0]] - final[pair.corrupt_object_ids[0]])


METRICS: dict[str, Callable[[torch.Tensor, Any], float]] = {
    "logprob": object_logprob,
    "logit-diff": logit_difference,
}


def hit_at_10(logits: torch.Tensor, pair: Any) -> bool:
    """Every object token ranks among the 10 highest logits where it is predicted."""
    start = len(pair.prompt_ids) - 1
    for k, token in enumerate(pair.object_ids):
        row = logits[start + k]
        if sorted(row.tolist(), reverse=True).index(float(row[token])) >= 10:
            return False
    return True


def faithfulness(circuit: float, full: float, empty: float) -> float:
    return (circuit - empty) / (full - empty)


@dataclass
class Evaluation:
    hit_original: float
    hit_circuit: float
    hit_random: float
    metric_full: float
    metric_empty: float
    metric_circuit: float
    metric_random: float

    @property
    def faithfulness(self) -> float:
        return faithfulness(self.metric_circuit, self.metric_full, self.metric_empty)

    @property
    def faithfulness_random(self) -> float:
        return faithfulness(self.metric_random, self.metric_full, self.metric_empty)


def _patched(model: Any, ids: Sequence[int], ablated: dict[str, torch.Tensor], kept: Any, level: str) -> Any:
    if level == "node":
        return node_patched_logits(model, ids, ablated, kept)
    return edge_patched_logits(model, ids, ablated, kept)


def evaluate(
    model: Any,
    batches: Sequence[Sequence[Any]],
    circuit: set[Any],
    random: set[Any],
    metric: str = "logprob",
    ablation: str = "corrupt",
    level: str = "edge",
) -> Evaluation:
    """Means over every pair of: Hit@10 of the model, the circuit and the random circuit, and the metric of
    the model, the empty circuit, the circuit and the random circuit. `batches` are lists of pairs (the
    mean ablation averages over a batch); circuits are sets of edges (level "edge") or of node names."""
    score = METRICS[metric]
    rows = []
    for pairs in batches:
        for pair, ablated in zip(pairs, ablated_outputs(model, pairs, ablation), strict=True):
            ids = pair.clean_ids
            full = logits_of(model, ids)
            kept_c = _patched(model, ids, ablated, circuit, level)
            kept_r = _patched(model, ids, ablated, random, level)
            empty = _patched(model, ids, ablated, set(), level)
            rows.append(
                (
                    hit_at_10(full, pair),
                    hit_at_10(kept_c, pair),
                    hit_at_10(kept_r, pair),
                    score(full, pair),
                    score(empty, pair),
                    score(kept_c, pair),
                    score(kept_r, pair),
                )
            )
    means = [sum(float(row[i]) for row in rows) / len(rows) for i in range(7)]
    return Evaluation(*means)


# ------------------------------------------------------------------------------- circuits by hand


def reachable_edges(kept: set[Edge]) -> set[Edge]:
    """The kept edges on some input-to-logits path of kept edges (a node is the writer or the reader's
    node: `a1.h0<q>` belongs to `a1.h0`)."""

    def node(reader: str) -> str:
        return reader.split("<")[0]

    from_input, to_logits = {"input"}, {"logits"}
    changed = True
    while changed:
        changed = False
        for writer, reader in kept:
            if writer in from_input and node(reader) not in from_input:
                from_input.add(node(reader))
                changed = True
            if node(reader) in to_logits and writer not in to_logits:
                to_logits.add(writer)
                changed = True
    return {(w, r) for w, r in kept if w in from_input and node(r) in to_logits}


def top_edges(model: Any, scores: dict[Edge, float], fraction: float) -> set[Edge]:
    """The max(1, round(n_edges * fraction)) edges with the highest |score|, then kept only on paths."""
    ranked = sorted(scores, key=lambda edge: -abs(scores[edge]))
    return reachable_edges(set(ranked[: max(1, round(len(ranked) * fraction))]))


def top_nodes(model: Any, scores: dict[str, float], fraction: float) -> set[str]:
    ranked = sorted(scores, key=lambda name: -abs(scores[name]))
    return set(ranked[: max(1, round(len(ranked) * fraction))])


@dataclass
class CurvePoint:
    percent: float
    size: int
    faithfulness: float


def faithfulness_curve(
    model: Any,
    batches: Sequence[Sequence[Any]],
    scores: dict[Any, float],
    percents: Sequence[float],
    metric: str = "logprob",
    ablation: str = "corrupt",
    level: str = "edge",
) -> list[CurvePoint]:
    """Faithfulness of the top-|score| circuit at each size (edges, or heads and MLPs at node level);
    means over all pairs of the metric."""
    score = METRICS[metric]
    pick = top_nodes if level == "node" else top_edges
    circuits = [pick(model, scores, percent / 100) for percent in percents]  # type: ignore[arg-type]
    full = empty = 0.0
    totals = [0.0] * len(circuits)
    for pairs in batches:
        for pair, ablated in zip(pairs, ablated_outputs(model, pairs, ablation), strict=True):
            full += score(logits_of(model, pair.clean_ids), pair)
            empty += score(_patched(model, pair.clean_ids, ablated, set(), level), pair)
            for i, kept in enumerate(circuits):
                totals[i] += score(_patched(model, pair.clean_ids, ablated, kept, level), pair)
    return [
        CurvePoint(percent, len(kept), faithfulness(total, full, empty))
        for percent, kept, total in zip(percents, circuits, totals, strict=True)
    ]


def curve_area(points: Sequence[CurvePoint]) -> float:
    """Trapezoids under faithfulness over the fraction of edges kept, from (0, 0)."""
    xs = [0.0] + [p.percent / 100 for p in points]
    ys = [0.0] + [p.faithfulness for p in points]
    return sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(points)))


# -------------------------------------------------------------------------------- integrated gradients


def integrated_gradient_scores(
    model: Any,
    batches: Sequence[Sequence[Any]],
    steps: int,
    metric: str = "logprob",
    ablation: str = "corrupt",
    level: str = "edge",
) -> dict[Any, float]:
    """EAP-IG scores by hand, averaged over every pair: per edge (writer, reader) at edge level, per head
    and MLP at node level (the input scores nothing there). steps=1 is plain EAP."""
    writers, readers = _names(model)
    targets = readers if level == "edge" else [w for w in writers if w != "input"]
    where = reader_hook if level == "edge" else writer_hook
    totals: dict[Any, float] = {}
    n_pairs = 0
    for pairs in batches:
        for pair, ablated in zip(pairs, ablated_outputs(model, pairs, ablation), strict=True):
            clean = writer_outputs(model, pair.clean_ids)
            start, end = writer_outputs(model, pair.corrupt_ids)["input"], clean["input"]
            mean_grad = {name: torch.zeros_like(end) for name in targets}
            for k in range(1, steps + 1):
                grads = gradients_at(model, pair, start + k / steps * (end - start), targets, where, metric)
                for name in targets:
                    mean_grad[name] += grads[name] / steps
            if level == "edge":
                for reader in readers:
                    for writer in writers:
                        if is_edge(writer, reader):
                            delta = ablated[writer] - clean[writer]
                            value = float((delta * mean_grad[reader]).sum())
                            totals[writer, reader] = totals.get((writer, reader), 0.0) + value
            else:
                for name in targets:
                    value = float(((ablated[name] - clean[name]) * mean_grad[name]).sum())
                    totals[name] = totals.get(name, 0.0) + value
            n_pairs += 1
    return {key: value / n_pairs for key, value in totals.items()}


def gradients_at(
    model: Any,
    pair: Any,
    embeddings: torch.Tensor,
    targets: Sequence[str],
    where: Callable[[str], tuple[str, int | None]],
    metric: str,
) -> dict[str, torch.Tensor]:
    """d metric / d (each target's own copy of its hooked tensor) `[pos, d]`, with the input embeddings
    replaced by `embeddings` `[pos, d]`."""
    taps: dict[str, torch.Tensor] = {}

    def embed(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        return embeddings.unsqueeze(0).clone().requires_grad_(True)

    def tap(point: str) -> PatchFn:
        def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
            copy = tensor.clone()  # a node of its own: the gradient that reaches this slot only
            copy.retain_grad()
            taps[point] = copy
            return copy

        return hook

    grouped = _group(targets, where)
    hooks: list[tuple[str, PatchFn]] = [("blocks.0.hook_in", embed)]
    hooks += [(point, tap(point)) for point in grouped]
    with torch.enable_grad():
        logits = model.bridge.run_with_hooks(
            _tokens(pair.clean_ids, model), fwd_hooks=hooks, return_type="logits"
        )
        _differentiable(METRICS[metric], logits[0], pair).backward()
    out = {}
    for point, entries in grouped.items():
        grad = taps[point].grad
        assert grad is not None, point
        for name, head in entries:
            out[name] = _slot(grad, head)
    return out


def _differentiable(score_fn: Callable[[torch.Tensor, Any], float], logits: torch.Tensor, pair: Any) -> Any:
    """The metric as a tensor (the float versions above are for no-grad runs)."""
    start = len(pair.prompt_ids) - 1
    if score_fn is object_logprob:
        return sum(logits[start + k].log_softmax(-1)[token] for k, token in enumerate(pair.object_ids))
    final = logits[start]
    return final[pair.object_ids[0]] - final[pair.corrupt_object_ids[0]]
