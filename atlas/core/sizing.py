"""The size of a circuit chosen by faithfulness: the smallest best-ranked circuit (pruned) whose faithfulness
reaches the target, up to a cap, judged out of fold by default.

The search evaluates a grid of sizes at once (the cap, the cap over powers of 4, and the faithfulness
curve's sizes below the cap: those evaluations are shared with the curve), takes the smallest grid size that
meets the target, and bisects between it and the grid size below (or the empty circuit). The circuit kept
always meets the target when any grid size does, the cap included; where faithfulness rises with size, the
size found is a linear scan's smallest (to `tolerance`). Faithfulness need not rise with size, so a size
between grid points can meet the target while the cap does not: then `target_met` is False and the most
faithful grid size is kept.

What a size is judged on:
- out of fold (`folds`, the default): the facts a circuit was ranked on flatter it, so each fold of the
  discovery facts runs on the circuit of that size ranked by the other folds' per-fact scores (free: no new
  gradients), all folds in one evaluation (`FoldCircuit`): sum over facts of (circuit - empty) over the sum
  of (full - empty). The circuit kept is the all-facts ranking's at the size chosen; its in-sample
  faithfulness is evaluated for the chosen size and the curve's sizes only (the others are NaN in the trace).
- in sample (no folds): the faithfulness on the discovery facts, or with `confidence` its lower quantile
  over bootstrap resamples of the facts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from atlas.core.evaluation import Evaluator, FoldCircuit, circuit_size, top_circuit

# Bisection stops when the bracket is within this fraction of its upper end: a circuit at most 1% larger
# than the smallest that meets the target, for about half the evaluations of an exact search.
SIZE_TOLERANCE = 0.01
GRID_LEVELS = 5  # cap, cap/4, cap/16, cap/64, cap/256


@dataclass(frozen=True)
class Folds:
    """The discovery facts dealt into folds: `fold_of[i]` is fact i's fold (evaluator fact order), and
    `orders[k]` the order (best-ranked first) that the facts outside fold k give."""

    fold_of: np.ndarray
    orders: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.orders)


def out_of_fold(evaluator: Evaluator, folds: Folds, sizes: Sequence[int]) -> list[float]:
    """Each size's faithfulness out of fold: every fold's facts on the circuit its order gives at that
    size (NaN where the model's own gap vanishes)."""
    graph, level = evaluator.graph, evaluator.level
    circuits = [
        FoldCircuit(
            torch.stack([top_circuit(graph, order, n, level) for order in folds.orders]), folds.fold_of
        )
        for n in sizes
    ]
    return [evaluator.faithfulness(outcome) for outcome in evaluator.outcomes(circuits)]


@dataclass
class SizeChoice:
    target: float
    cap: int  # best-ranked edges (nodes) the search may take
    n_top: int  # best-ranked edges (nodes) taken, before pruning
    size: int  # edges (nodes) kept after pruning
    faithfulness: float  # on the discovery facts
    target_met: bool
    confidence: float = 0.0  # the share of bootstrap resamples of the facts the target had to hold on
    folds: int = 0  # folds each size was judged over (0: on the facts it was found on)
    # What the target was judged on: the faithfulness on that share of resamples, or out of fold
    # (= faithfulness for confidence 0 and no folds)
    bound: float = float("nan")
    # (n_top, size, faithfulness, bound) of every size evaluated, by n_top (out of fold, faithfulness in
    # sample is NaN except at the chosen size and the curve's sizes)
    trace: list[tuple[int, int, float, float]] = field(default_factory=list)


def search_size(
    evaluator: Evaluator,
    order: np.ndarray,
    target: float,
    cap: int,
    extra_grid: Sequence[int] = (),
    tolerance: float = SIZE_TOLERANCE,
    confidence: float = 0.0,
    folds: Folds | None = None,
) -> tuple[SizeChoice, torch.Tensor]:
    """The chosen size and its circuit (a bool edge mask). `order`: edges (or heads and MLPs), best-ranked
    first; `extra_grid`: more sizes worth evaluating in the first round (the curve's); `confidence`: the
    target must hold on that share of bootstrap resamples of the facts (Evaluator.faithfulness_bound), not
    only on the facts as drawn; `folds`: judge each size out of fold instead (see the module's docstring)."""
    graph, level = evaluator.graph, evaluator.level
    cap = max(1, min(cap, len(order)))
    seen: dict[int, tuple[torch.Tensor, float, float]] = {}  # n -> (edges, faithfulness, bound)
    free = set(extra_grid)  # sizes the caller evaluates in sample anyway (the curve's)

    def evaluate(sizes: Sequence[int]) -> None:
        new = sorted({n for n in sizes if n not in seen})
        circuits = {n: top_circuit(graph, order, n, level) for n in new}
        # Out of fold, in sample only where it costs nothing more (the curve's sizes).
        plain = [n for n in new if not folds or n in free]
        outcomes = dict(zip(plain, evaluator.outcomes([circuits[n] for n in plain]), strict=True))
        judged = dict(zip(new, out_of_fold(evaluator, folds, new), strict=True)) if folds else {}
        for n in new:
            faithful = evaluator.faithfulness(outcomes[n]) if n in outcomes else float("nan")
            bound = judged[n] if folds else evaluator.faithfulness_bound(outcomes[n], confidence)
            seen[n] = (circuits[n], faithful, bound)

    def meets(n: int) -> bool:
        return seen[n][2] >= target  # False for NaN

    grid = {max(1, cap // 4**j) for j in range(GRID_LEVELS)} | {n for n in extra_grid if 1 <= n <= cap}
    evaluate(sorted(grid))
    met = [n for n in sorted(grid) if meets(n)]
    if met:
        hi = met[0]
        lo = max((n for n in grid if n < hi), default=0)
        while hi - lo > max(1, math.floor(tolerance * hi)):
            mid = (lo + hi) // 2
            evaluate([mid])
            hi, lo = (mid, lo) if meets(mid) else (hi, mid)
        chosen = hi
    else:
        finite = [n for n in grid if not math.isnan(seen[n][2])]
        chosen = max(finite, key=lambda n: (seen[n][2], -n)) if finite else cap
    edges, value, bound = seen[chosen]
    if math.isnan(value) and folds:  # the kept circuit's own faithfulness, on the facts it was found on
        value = evaluator.faithfulness(evaluator.outcomes([edges])[0])
        seen[chosen] = (edges, value, bound)
    trace = [(n, circuit_size(seen[n][0], graph, level), seen[n][1], seen[n][2]) for n in sorted(seen)]
    choice = SizeChoice(
        target=target,
        cap=cap,
        n_top=chosen,
        size=circuit_size(edges, graph, level),
        faithfulness=value,
        target_met=bool(met),
        confidence=confidence,
        folds=len(folds) if folds else 0,
        bound=bound,
        trace=trace,
    )
    return choice, edges
