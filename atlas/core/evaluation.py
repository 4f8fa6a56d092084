"""Circuit evaluation on one split of facts: the metric, Hit@10 and top-1 of the original model, of circuits
and of random circuits; faithfulness `(m(circuit) - m(empty)) / (m(full) - m(empty))`; the faithfulness
curve over sizes.

An `Evaluator` holds one split's batches. Per batch it computes once what every circuit shares (the writers'
ablated outputs, the full model's readout); circuits are evaluated several to a forward pass (stacked on
the batch axis, as many as `ATLAS_EVAL_MEMORY_MB` allows) and each distinct edge set only once. Under a
discovery memory budget (`--max-memory`, ATLAS_MAX_MEMORY_MB: atlas.core.memory) that budget sets instead how
many facts and circuits a pass holds and how many ablated outputs are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from atlas.core.attribution.base import ablated_outputs, micro_batches
from atlas.core.circuit import Circuit
from atlas.core.graph import Graph
from atlas.core.intervention import patched_logits
from atlas.core.memory import MemoryBudget, discovery_budget, evaluation_fact_bytes, facts_per_pass
from atlas.core.metrics import Metric, hits_at_k
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch
from atlas.core.readout import readout_batch, readout_logits
from atlas.spec import graph as index
from atlas.spec.params import UNINFORMATIVE_HIT_RANDOM

# Resamples of the facts for a faithfulness bound (the size search's `confidence`).
BOOTSTRAP_RESAMPLES = 200
# Circuit sizes of the faithfulness curve, in percent of the graph's edges (or of its heads and MLPs at node
# level): MIB's grid.
CURVE_PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class Outcome:
    """Means over a split's facts of one run (the full model, the empty circuit, or a circuit), and the
    metric of each fact (batch order), which a bootstrap over the facts needs."""

    metric: float
    hit: float  # Hit@10: every object token in the top 10 where it is predicted
    top1: float  # every object token ranked first where it is predicted
    per_fact: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)


@dataclass(frozen=True)
class FoldCircuit:
    """A circuit that differs from fold to fold of a split's facts: fact i (in the evaluator's fact order)
    runs on `masks[fold_of[i]]`. Judging each fold on the circuit ranked without its facts (the size
    search's out-of-fold rule) is then one evaluation over the split, not one per fold."""

    masks: torch.Tensor  # bool [n_folds, n_writers, n_readers]
    fold_of: np.ndarray  # int [n_facts]

    def for_facts(self, start: int, stop: int) -> torch.Tensor:
        """The masks of facts start..stop-1: `[stop - start, n_writers, n_readers]`."""
        return self.masks[torch.from_numpy(self.fold_of[start:stop]).long()]


Mask = torch.Tensor | FoldCircuit  # one circuit for every fact, or one per fold


def faithfulness(circuit: float, full: float, empty: float) -> float:
    gap = full - empty
    return float("nan") if abs(gap) < 1e-9 else (circuit - empty) / gap


@dataclass
class SplitEvaluation:
    n_facts: int
    hit_original: float
    hit_circuit: float
    hit_random: float
    metric_full: float
    metric_empty: float
    metric_circuit: float
    metric_random: float
    top1_original: float = float("nan")
    top1_circuit: float = float("nan")
    top1_random: float = float("nan")

    @property
    def faithfulness(self) -> float:
        return faithfulness(self.metric_circuit, self.metric_full, self.metric_empty)

    @property
    def faithfulness_random(self) -> float:
        return faithfulness(self.metric_random, self.metric_full, self.metric_empty)

    @property
    def hit_informative(self) -> bool:
        """False where a random circuit of the same size reaches Hit@10 on half the facts or more: the
        answer set is so small that Hit@10 cannot tell a circuit from a random one."""
        return not self.hit_random >= UNINFORMATIVE_HIT_RANDOM


@dataclass
class CurvePoint:
    percent: float
    n_edges: int  # edges kept (pruned), or heads and MLPs kept at node level
    faithfulness: float


@dataclass
class FaithfulnessCurve:
    points: list[CurvePoint] = field(default_factory=list)

    @property
    def area(self) -> float:
        """Area under faithfulness over the fraction of edges kept (trapezoids from 0), MIB's CPR."""
        area, last_x, last_y = 0.0, 0.0, 0.0
        for point in self.points:
            x = point.percent / 100
            area += (x - last_x) * (point.faithfulness + last_y) / 2
            last_x, last_y = x, point.faithfulness
        return area


@torch.no_grad()
def known_mask(model: LoadedModel, batch: Batch, k: int = 10) -> list[bool]:
    """Whether the model ranks each pair's object in its top k, in `batch.pairs` order."""
    batch = batch.to(model.device)
    logits = readout_logits(model, batch.clean, batch)
    return [bool(hit) for hit in hits_at_k(logits, readout_batch(batch), k).tolist()]


def eval_memory_bytes() -> int:
    from atlas.spec.config import get_settings

    return int(get_settings().eval_memory_mb) * 2**20


class Evaluator:
    """Evaluates circuits (bool edge masks `[n_writers, n_readers]`) on one split's batches."""

    def __init__(
        self,
        model: LoadedModel,
        graph: Graph,
        batches: Sequence[Batch],
        metric: Metric,
        ablation: str,
        level: str,
        memory_bytes: int | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        """`budget` (None: ATLAS_MAX_MEMORY_MB's, if set) replaces `memory_bytes` (ATLAS_EVAL_MEMORY_MB's):
        batches are cut into passes of the facts it holds, and ablated outputs kept while they fit beside
        a pass."""
        self.model, self.graph, self.metric, self.ablation, self.level = model, graph, metric, ablation, level
        self.budget = budget if budget is not None or memory_bytes is not None else discovery_budget(model)
        self.batches = [batch.to(model.device) for batch in batches]
        self._pass_bytes = 0  # under a budget: the largest pass's estimated peak for one circuit
        if self.budget is not None:
            self.batches = [part for batch in self.batches for part in self._fit(batch, self.budget)]
        self.n_facts = sum(batch.size for batch in self.batches)
        self.starts = np.cumsum([0] + [batch.size for batch in self.batches])  # batch i's first fact
        self.memory_bytes = eval_memory_bytes() if memory_bytes is None else memory_bytes
        self._ablated: dict[int, torch.Tensor] = {}
        self._cache: dict[bytes, Outcome] = {}
        self._full: Outcome | None = None
        self._resample_weights: np.ndarray | None = None
        self.forwards = 0  # patched forward passes run (each holds up to `chunk` circuits)
        self.circuits_run = 0  # distinct circuits evaluated (a FoldCircuit counts once)

    def _fit(self, batch: Batch, budget: MemoryBudget) -> list[Batch]:
        """`batch` in passes that hold one circuit each within the budget."""
        need = evaluation_fact_bytes(self.model, self.graph, batch.clean.shape[1], batch.target_pos.shape[1])
        parts = micro_batches(
            self.model, self.graph, batch, facts_per_pass(budget, need, "evaluation"), self.ablation
        )
        self._pass_bytes = max(self._pass_bytes, need * max(part.size for part in parts))
        return parts

    # ------------------------------------------------------------------------------------ shared per batch

    def ablated(self, i: int) -> torch.Tensor:
        """Batch i's writers' ablated outputs; kept while they fit in half the memory (or, under a budget,
        beside a pass of `chunk` circuits)."""
        if i in self._ablated:
            return self._ablated[i]
        batch = self.batches[i]
        values = ablated_outputs(self.model, self.graph, batch, self.ablation)
        size = values.numel() * values.element_size()
        if self.budget is not None:
            if self.budget.reserve(size, self.chunk * self._pass_bytes):
                self._ablated[i] = values
            return values
        held = sum(t.numel() * t.element_size() for t in self._ablated.values())
        if held + size <= self.memory_bytes // 2:
            self._ablated[i] = values
        return values

    @property
    def full(self) -> Outcome:
        """The model as it is."""
        if self._full is None:
            parts = []
            with torch.no_grad():
                for batch in self.batches:
                    logits = readout_logits(self.model, batch.clean, batch)
                    parts.append(self._values(logits, readout_batch(batch), 1)[0])
            self._full = self._outcome(np.concatenate(parts, axis=1))
        return self._full

    @property
    def empty(self) -> Outcome:
        """Every edge (every head and MLP) ablated."""
        return self.outcomes([torch.zeros(self.graph.n_writers, self.graph.n_readers, dtype=torch.bool)])[0]

    def faithfulness(self, outcome: Outcome) -> float:
        return faithfulness(outcome.metric, self.full.metric, self.empty.metric)

    def faithfulness_bound(self, outcome: Outcome, confidence: float) -> float:
        """The faithfulness the circuit reaches on a share `confidence` of bootstrap resamples of the facts
        (its (1 - confidence) quantile over `BOOTSTRAP_RESAMPLES` seeded resamples); the plain faithfulness
        for confidence 0."""
        if confidence <= 0:
            return self.faithfulness(outcome)
        if self._resample_weights is None:
            rng = np.random.default_rng(0)
            draws = rng.integers(self.n_facts, size=(BOOTSTRAP_RESAMPLES, self.n_facts))
            self._resample_weights = np.stack([np.bincount(d, minlength=self.n_facts) for d in draws])
        weights = self._resample_weights
        empty = self.empty.per_fact
        gap = weights @ (self.full.per_fact - empty)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(np.abs(gap) < 1e-9, np.nan, (weights @ (outcome.per_fact - empty)) / gap)
        if np.isnan(values).any():
            return float("nan")
        return float(np.quantile(values, 1 - confidence))

    # -------------------------------------------------------------------------------------------- circuits

    @property
    def chunk(self) -> int:
        """Circuits per patched forward: the differences kept per circuit cost at most n_writers x the
        largest batch's activations (under a budget: as many passes' estimated peaks as it holds)."""
        if self.budget is not None:
            return max(1, min(16, self.budget.free // max(self._pass_bytes, 1)))
        largest = max((b.size * b.clean.shape[1] for b in self.batches), default=1)
        per_circuit = self.graph.n_writers * largest * self.model.d_model * 4
        return max(1, min(16, self.memory_bytes // 2 // max(per_circuit, 1)))

    def outcomes(self, circuits: Sequence[Mask]) -> list[Outcome]:
        """Each circuit's outcome, in order; an edge set evaluated before is not run again."""
        keys = [_mask_key(edges) for edges in circuits]
        pending = dict(zip(keys, circuits, strict=True))
        todo = [key for key in pending if key not in self._cache]
        self.circuits_run += len(todo)
        for start in range(0, len(todo), self.chunk):
            chosen = [pending[key] for key in todo[start : start + self.chunk]]
            plain = [c for c in chosen if isinstance(c, torch.Tensor)]
            shared = torch.stack([c.cpu() for c in plain]) if len(plain) == len(chosen) else None
            parts = []  # per batch: [circuits, 3, batch size]
            for i, batch in enumerate(self.batches):
                stack = shared if shared is not None else self._per_fact(chosen, i)
                logits = patched_logits(self.model, self.graph, batch, self.ablated(i), stack, self.level)
                self.forwards += 1
                parts.append(self._values(logits, readout_batch(batch, len(chosen)), len(chosen)))
            values = np.concatenate(parts, axis=2)
            for c, key in enumerate(todo[start : start + self.chunk]):
                self._cache[key] = self._outcome(values[c])
        return [self._cache[key] for key in keys]

    def evaluate(self, circuit: Circuit, random: Circuit) -> SplitEvaluation:
        """The circuit and its random baseline against the full model and the empty circuit."""
        c, r = self.outcomes([circuit.edges, random.edges])
        full, empty = self.full, self.empty
        return SplitEvaluation(
            n_facts=self.n_facts,
            hit_original=full.hit,
            hit_circuit=c.hit,
            hit_random=r.hit,
            metric_full=full.metric,
            metric_empty=empty.metric,
            metric_circuit=c.metric,
            metric_random=r.metric,
            top1_original=full.top1,
            top1_circuit=c.top1,
            top1_random=r.top1,
        )

    # ------------------------------------------------------------------------------------------- internals

    def _per_fact(self, circuits: Sequence[Mask], i: int) -> torch.Tensor:
        """Batch i's mask for each fact of each circuit: `[circuits, batch, n_writers, n_readers]`."""
        start, stop = int(self.starts[i]), int(self.starts[i + 1])
        return torch.stack(
            [
                c.for_facts(start, stop)
                if isinstance(c, FoldCircuit)
                else c.cpu().expand(stop - start, *c.shape)
                for c in circuits
            ]
        )

    def _values(self, logits: torch.Tensor, batch: Batch, copies: int) -> np.ndarray:
        """Each fact's metric, Hit@10 and top-1 for each of `copies` stacked copies: `[copies, 3, size]`."""
        values = torch.stack(
            [
                self.metric(logits, batch),
                hits_at_k(logits, batch, 10).float(),
                hits_at_k(logits, batch, 1).float(),
            ]
        )  # [3, copies * size]
        return values.view(3, copies, -1).transpose(0, 1).double().cpu().numpy()

    def _outcome(self, values: np.ndarray) -> Outcome:
        """From `[3, n_facts]` per-fact values."""
        means = values.mean(1) if values.shape[1] else np.full(3, float("nan"))
        return Outcome(metric=float(means[0]), hit=float(means[1]), top1=float(means[2]), per_fact=values[0])


def _mask_key(edges: Mask) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(edges, FoldCircuit):
        digest.update(b"folds")
        digest.update(np.ascontiguousarray(edges.fold_of, dtype=np.int64).tobytes())
        edges = edges.masks
    digest.update(np.packbits(edges.detach().cpu().numpy().ravel()).tobytes())
    return digest.digest()


# ---------------------------------------------------------------------------------------------- the curve


def curve_sizes(graph: Graph, level: str, percents: Sequence[float] = CURVE_PERCENTS) -> list[int]:
    """The number of top-|score| edges (or heads and MLPs) at each percent of the graph."""
    total = graph.n_edges if level == "edge" else graph.n_components
    return [max(1, round(total * percent / 100)) for percent in percents]


def top_circuit(graph: Graph, order: np.ndarray, n: int, level: str) -> torch.Tensor:
    """The circuit of the n first edges of `order` (pruned), or at node level of the n first heads and
    MLPs: a bool edge mask."""
    if level == "node":
        kept = np.zeros(graph.n_writers, dtype=bool)
        kept[order[:n]] = True
        return torch.from_numpy(index.node_circuit_edges(graph, kept))
    return torch.from_numpy(index.prune(graph, index.mask_of(graph, order[:n])))


def score_order(graph: Graph, scores: torch.Tensor, ranking: str = "absolute") -> np.ndarray:
    """Edges (flat indices) or, for node scores `[n_writers]`, heads and MLPs, best-ranked first."""
    values = scores.detach().cpu().double().numpy()
    if values.ndim == 1:
        return index.node_order(graph, values, ranking)
    return index.edge_order(graph, values, ranking)


def circuit_size(edges: torch.Tensor, graph: Graph, level: str) -> int:
    """Edges kept, or at node level heads and MLPs kept."""
    if level == "node":
        return int(index.kept_components(graph, edges.cpu().numpy()).sum())
    return int(edges.sum())


def faithfulness_curve(
    evaluator: Evaluator,
    scores: torch.Tensor,
    percents: Sequence[float] = CURVE_PERCENTS,
    ranking: str = "absolute",
) -> FaithfulnessCurve:
    """Faithfulness of the best-ranked circuit at each size in `percents` of the graph."""
    graph, level = evaluator.graph, evaluator.level
    order = score_order(graph, scores, ranking)
    circuits = [top_circuit(graph, order, n, level) for n in curve_sizes(graph, level, percents)]
    outcomes = evaluator.outcomes(circuits)
    return FaithfulnessCurve(
        [
            CurvePoint(percent, circuit_size(edges, graph, level), evaluator.faithfulness(outcome))
            for percent, edges, outcome in zip(percents, circuits, outcomes, strict=True)
        ]
    )
