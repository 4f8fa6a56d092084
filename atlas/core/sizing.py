"""The size of a circuit chosen by faithfulness: the smallest top-|score| circuit (pruned) whose faithfulness
on the discovery facts reaches the target, up to a cap.

The search evaluates a grid of sizes at once (the cap, the cap over powers of 4, and the faithfulness
curve's sizes below the cap: those evaluations are shared with the curve), takes the smallest grid size that
meets the target, and bisects between it and the grid size below (or the empty circuit). The circuit kept
always meets the target when any grid size does, the cap included; where faithfulness rises with size, the
size found is a linear scan's smallest (to `tolerance`). Faithfulness need not rise with size, so a size
between grid points can meet the target while the cap does not: then `target_met` is False and the most
faithful grid size is kept.

Out of fold (`folds`): the facts a circuit was found on flatter it, since the ranking was fit to them; each
size is then judged on every fold's facts with the circuit of that size ranked by the other folds' facts
(per-fact scores make those rankings free), pooled over folds: sum over facts of (circuit - empty) over sum
of (full - empty). The circuit kept is the all-facts ranking's at the size chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from atlas.core.evaluation import Evaluator, circuit_size, top_circuit

# Bisection stops when the bracket is within this fraction of its upper end: a circuit at most 1% larger
# than the smallest that meets the target, for about half the evaluations of an exact search.
SIZE_TOLERANCE = 0.01
GRID_LEVELS = 5  # cap, cap/4, cap/16, cap/64, cap/256


@dataclass(frozen=True)
class Fold:
    """One fold of the discovery facts: an evaluator over its facts, and the order (best-ranked first) that
    the other folds' facts give."""

    evaluator: Evaluator
    order: np.ndarray


def out_of_fold(folds: Sequence[Fold], sizes: Sequence[int], level: str) -> list[float]:
    """Each size's faithfulness out of fold: every fold's facts on the circuit its order gives at that
    size, pooled over folds (NaN where the model's own gap vanishes)."""
    gained = np.zeros(len(sizes))
    gap = 0.0
    for fold in folds:
        e = fold.evaluator
        circuits = [top_circuit(e.graph, fold.order, n, level) for n in sizes]
        empty = e.empty.per_fact
        gap += float((e.full.per_fact - empty).sum())
        gained += [float((o.per_fact - empty).sum()) for o in e.outcomes(circuits)]
    return [float("nan") if abs(gap) < 1e-9 else float(g / gap) for g in gained]


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
    # (n_top, size, faithfulness, bound) of every size evaluated, by n_top
    trace: list[tuple[int, int, float, float]] = field(default_factory=list)


def search_size(
    evaluator: Evaluator,
    order: np.ndarray,
    target: float,
    cap: int,
    extra_grid: Sequence[int] = (),
    tolerance: float = SIZE_TOLERANCE,
    confidence: float = 0.0,
    folds: Sequence[Fold] = (),
) -> tuple[SizeChoice, torch.Tensor]:
    """The chosen size and its circuit (a bool edge mask). `order`: edges (or heads and MLPs), best-ranked
    first; `extra_grid`: more sizes worth evaluating in the first round (the curve's); `confidence`: the
    target must hold on that share of bootstrap resamples of the facts (Evaluator.faithfulness_bound), not
    only on the facts as drawn; `folds`: judge each size out of fold instead (see the module's docstring)."""
    graph, level = evaluator.graph, evaluator.level
    cap = max(1, min(cap, len(order)))
    seen: dict[int, tuple[torch.Tensor, float, float]] = {}  # n -> (edges, faithfulness, bound)

    def evaluate(sizes: Sequence[int]) -> None:
        new = sorted({n for n in sizes if n not in seen})
        circuits = [top_circuit(graph, order, n, level) for n in new]
        judged = out_of_fold(folds, new, level) if folds else None
        for i, (n, edges, outcome) in enumerate(
            zip(new, circuits, evaluator.outcomes(circuits), strict=True)
        ):
            bound = judged[i] if judged is not None else evaluator.faithfulness_bound(outcome, confidence)
            seen[n] = (edges, evaluator.faithfulness(outcome), bound)

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
    trace = [(n, circuit_size(seen[n][0], graph, level), seen[n][1], seen[n][2]) for n in sorted(seen)]
    choice = SizeChoice(
        target=target,
        cap=cap,
        n_top=chosen,
        size=circuit_size(edges, graph, level),
        faithfulness=value,
        target_met=bool(met),
        confidence=confidence,
        folds=len(folds),
        bound=bound,
        trace=trace,
    )
    return choice, edges
