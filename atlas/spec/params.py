"""What a discovery run is asked to do: its parameters, their validation (one for the CLI, the API and the
queue), and the run's key, a hash of its canonical parameters.

A circuit's size is chosen by one of three rules:
- `faithfulness` (the default): the smallest best-ranked circuit whose faithfulness on the discovery facts
  reaches `target_faithfulness` (0.8), searched up to `max_edges` edges (2% of the graph's edges) or, at node
  level, `max_nodes` heads and MLPs (a quarter of them);
- `top_n`: the n best-ranked edges (or nodes);
- `threshold`: every edge ranked at least the threshold.
Edges are ranked `signed` (those whose ablation lowers the metric most first: the default) or `absolute`
(largest |score| first), atlas.spec.graph.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from atlas.spec.errors import Invalid
from atlas.spec.graph import RANKINGS
from atlas.spec.methods import DEFAULT_METHOD, METHOD_NAMES, method_spec

Level = Literal["edge", "node"]
Ablation = Literal["corrupt", "zero", "mean"]
Selection = Literal["faithfulness", "top_n", "threshold"]
ABLATIONS: tuple[str, ...] = ("corrupt", "zero", "mean")
LEVELS: tuple[str, ...] = ("edge", "node")
METRICS: tuple[str, ...] = ("logprob", "logit-diff")
SELECTIONS: tuple[str, ...] = ("faithfulness", "top_n", "threshold")
TEMPLATE_AUTO = "auto"  # the zero-shot template under which the model knows the most facts

DEFAULT_TARGET_FAITHFULNESS = 0.8
DEFAULT_CONFIDENCE = 0.0
# The size search judges each size out of fold: the discovery facts fall in this many folds, and each fold's
# facts are scored on the circuit ranked by the other folds' facts (0 or 1: on the facts it was found on).
DEFAULT_SIZE_FOLDS = 3
MAX_SIZE_FOLDS = 10
# Hit@10 that a random circuit of the same size reaches this often tells nothing about the circuit.
UNINFORMATIVE_HIT_RANDOM = 0.5
# The size search's caps, as fractions of the graph: 2% of its edges (MIB's range for faithful circuits),
# a quarter of its heads and MLPs at node level.
DEFAULT_MAX_EDGE_FRACTION = 0.02
DEFAULT_MAX_NODE_FRACTION = 0.25
DEFAULT_BOOTSTRAP = 20
MAX_BOOTSTRAP = 1000
MAX_IG_STEPS = 512
MAX_SEED = 2**63 - 1
# Fixed sizes of the older default rule, still what `top_n` falls back to where no size is given.
DEFAULT_TOP_N = 300
DEFAULT_TOP_N_NODES = 20


class DiscoveryError(Invalid):
    """Discovery cannot run as asked; the message says why."""


def max_edges_for(n_edges: int, max_edges: int | None) -> int:
    """The size search's cap in edges for a graph of `n_edges` edges."""
    cap = max_edges if max_edges is not None else round(DEFAULT_MAX_EDGE_FRACTION * n_edges)
    return max(1, min(cap, n_edges))


def max_nodes_for(n_components: int, max_nodes: int | None) -> int:
    cap = max_nodes if max_nodes is not None else round(DEFAULT_MAX_NODE_FRACTION * n_components)
    return max(1, min(cap, n_components))


@dataclass(frozen=True)
class DiscoveryParams:
    method: str = DEFAULT_METHOD
    ig_steps: int = 5
    metric: str = "logprob"
    # Size: by faithfulness unless top_n or threshold is given (see the module's docstring).
    target_faithfulness: float | None = None  # None: DEFAULT_TARGET_FAITHFULNESS
    # The share of bootstrap resamples of the discovery facts the target must hold on (0: on the facts as
    # drawn): a margin for facts the circuit was not found on.
    confidence: float | None = None  # None: DEFAULT_CONFIDENCE
    size_folds: int | None = None  # None: DEFAULT_SIZE_FOLDS; judge sizes out of fold (sizing.py)
    max_edges: int | None = None  # None: DEFAULT_MAX_EDGE_FRACTION of the graph's edges
    max_nodes: int | None = None  # None: DEFAULT_MAX_NODE_FRACTION of the heads and MLPs
    top_n: int | None = None
    threshold: float | None = None
    ranking: str = "signed"  # atlas.spec.graph.RANKINGS
    bootstrap: int = DEFAULT_BOOTSTRAP  # resamples of the discovery facts for each member's stability; 0: off
    max_facts: int = 32
    heldout_fraction: float = 0.5  # of the known, paired facts, kept back for evaluation
    template: str | int | None = None  # an index, a string with {}, "auto", or None (the first zero-shot)
    ablation: str = "corrupt"
    batch_size: int = 16
    seed: int = 0
    curve: bool = True
    known_only: bool = True  # drop facts whose object is not in the model's top 10, as the paper does
    level: str | None = None  # "edge" or "node"; None: edge where the model allows it, else node

    @property
    def selection(self) -> Selection:
        if self.top_n is not None:
            return "top_n"
        if self.threshold is not None:
            return "threshold"
        return "faithfulness"

    @property
    def target(self) -> float:
        """The faithfulness the size search aims for."""
        return DEFAULT_TARGET_FAITHFULNESS if self.target_faithfulness is None else self.target_faithfulness

    @property
    def bound_confidence(self) -> float:
        """The share of resamples the size search's target must hold on."""
        return DEFAULT_CONFIDENCE if self.confidence is None else self.confidence

    @property
    def folds(self) -> int:
        """Folds the size search judges each size over (0: in sample)."""
        if self.size_folds is None:  # the default, unless --confidence chose the other way to judge
            folds = 0 if self.bound_confidence > 0 else DEFAULT_SIZE_FOLDS
        else:
            folds = self.size_folds
        return 0 if folds < 2 else folds

    @property
    def steps(self) -> int:
        """Integration steps the method takes (1 for methods without a path)."""
        return self.ig_steps if method_spec(self.method).takes_steps else 1

    def validate(self) -> None:
        """Raise Invalid naming the first bad field (its CLI option's words in the message)."""
        for field, ok, message in self._checks():
            if not ok:
                raise DiscoveryError(message, field=field)

    def _checks(self) -> list[tuple[str, bool, str]]:
        def integer(value: object, low: int, high: int | None = None) -> bool:
            return (
                isinstance(value, int)
                and not isinstance(value, bool)
                and value >= low
                and (high is None or value <= high)
            )

        def real(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

        fixed = self.top_n is not None or self.threshold is not None
        return [
            (
                "method",
                self.method in METHOD_NAMES,
                f"method must be one of {', '.join(METHOD_NAMES)}, got {self.method!r}",
            ),
            (
                "ig_steps",
                integer(self.ig_steps, 1, MAX_IG_STEPS),
                f"ig-steps must be an integer from 1 to {MAX_IG_STEPS}, got {self.ig_steps!r}",
            ),
            (
                "ranking",
                self.ranking in RANKINGS,
                f"ranking must be one of {', '.join(RANKINGS)}, got {self.ranking!r}",
            ),
            (
                "metric",
                self.metric in METRICS,
                f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}",
            ),
            (
                "ablation",
                self.ablation in ABLATIONS,
                f"ablation must be one of {', '.join(ABLATIONS)}, got {self.ablation!r}",
            ),
            (
                "level",
                self.level is None or self.level in LEVELS,
                f"level must be one of {', '.join(LEVELS)}, got {self.level!r}",
            ),
            (
                "top_n",
                self.top_n is None or integer(self.top_n, 1),
                f"top-n must be at least 1, got {self.top_n!r}",
            ),
            (
                "threshold",
                self.threshold is None or (real(self.threshold) and self.threshold >= 0),
                f"threshold must be a finite number at least 0, got {self.threshold!r}",
            ),
            (
                "threshold",
                self.top_n is None or self.threshold is None,
                "give --top-n or --threshold, not both: each fixes the circuit's size",
            ),
            (
                "target_faithfulness",
                self.target_faithfulness is None
                or (real(self.target_faithfulness) and 0 < self.target_faithfulness <= 1),
                f"target faithfulness must be in (0, 1], got {self.target_faithfulness!r}",
            ),
            (
                "confidence",
                self.confidence is None or (real(self.confidence) and 0 <= self.confidence < 1),
                f"confidence must be in [0, 1), got {self.confidence!r}",
            ),
            (
                "size_folds",
                self.size_folds is None or integer(self.size_folds, 0, MAX_SIZE_FOLDS),
                f"size folds must be an integer from 0 to {MAX_SIZE_FOLDS}, got {self.size_folds!r}",
            ),
            (
                "size_folds",
                self.size_folds is None or self.size_folds < 2 or not self.confidence,
                "--size-folds and --confidence are two ways to judge a size: give one",
            ),
            (
                "max_edges",
                self.max_edges is None or integer(self.max_edges, 1),
                f"max-edges must be at least 1, got {self.max_edges!r}",
            ),
            (
                "max_nodes",
                self.max_nodes is None or integer(self.max_nodes, 1),
                f"max-nodes must be at least 1, got {self.max_nodes!r}",
            ),
            (
                "target_faithfulness",
                not fixed
                or (
                    self.target_faithfulness is None
                    and self.confidence is None
                    and self.size_folds is None
                    and self.max_edges is None
                    and self.max_nodes is None
                ),
                "--target-faithfulness, --confidence, --size-folds, --max-edges and --max-nodes size the "
                "circuit by faithfulness; --top-n and --threshold fix its size: give one or the other",
            ),
            (
                "bootstrap",
                integer(self.bootstrap, 0, MAX_BOOTSTRAP),
                f"bootstrap must be an integer from 0 to {MAX_BOOTSTRAP}, got {self.bootstrap!r}",
            ),
            (
                "max_facts",
                integer(self.max_facts, 1),
                f"max-facts must be at least 1, got {self.max_facts!r}",
            ),
            (
                "heldout_fraction",
                real(self.heldout_fraction) and 0 <= self.heldout_fraction < 1,
                f"held-out fraction must be in [0, 1), got {self.heldout_fraction!r}",
            ),
            (
                "template",
                _template_ok(self.template),
                f"template must be an index (0, 1, ...), {TEMPLATE_AUTO!r} or a string with {{}}, "
                f"got {self.template!r}",
            ),
            (
                "batch_size",
                integer(self.batch_size, 1),
                f"batch size must be at least 1, got {self.batch_size!r}",
            ),
            (
                "seed",
                integer(self.seed, 0, MAX_SEED),
                f"seed must be an integer from 0 to 2^63-1, got {self.seed!r}",
            ),
            ("curve", isinstance(self.curve, bool), f"curve must be true or false, got {self.curve!r}"),
            (
                "known_only",
                isinstance(self.known_only, bool),
                f"known_only must be true or false, got {self.known_only!r}",
            ),
        ]

    def canonical(self, level: str) -> dict[str, Any]:
        """What defines the run's result, normalized so equal runs are equal: defaults resolved that do not
        depend on the model, parameters a rule ignores left out. (batch_size is not part of it: it changes
        the float sums' order, not what is computed.)"""
        selection = self.selection
        out: dict[str, Any] = {
            "method": self.method,
            "metric": self.metric,
            "level": level,
            "ablation": self.ablation,
            "selection": selection,
            "ranking": self.ranking,
            "template": template_key(self.template),
            "seed": self.seed,
            "max_facts": self.max_facts,
            "heldout_fraction": float(self.heldout_fraction),
            "known_only": self.known_only,
            "curve": self.curve,
            "bootstrap": self.bootstrap,
        }
        if method_spec(self.method).takes_steps:
            out["ig_steps"] = self.ig_steps
        if selection == "faithfulness":
            out["target_faithfulness"] = float(self.target)
            # Added later: at their neutral values they compute what keys without them did.
            if self.bound_confidence > 0:
                out["confidence"] = float(self.bound_confidence)
            if self.folds:
                out["size_folds"] = self.folds
            # None: the default fraction of whichever graph the run is on.
            out["max_edges" if level == "edge" else "max_nodes"] = (
                self.max_edges if level == "edge" else self.max_nodes
            )
        elif selection == "top_n":
            out["top_n"] = self.top_n
        else:
            out["threshold"] = float(self.threshold) if self.threshold is not None else None
        return out

    def key(self, level: str) -> str:
        """sha256 of the canonical parameters: runs are unique per model, relation, key, corpus and code."""
        return params_key(self.canonical(level))


def params_key(canonical: dict[str, Any]) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def template_key(template: str | int | None) -> str:
    """A template as the run key records it: "" for the default, "#i" for an index, else the string."""
    if template is None:
        return ""
    if isinstance(template, int):
        return f"#{template}"
    return template


def _template_ok(template: object) -> bool:
    if template is None or template == TEMPLATE_AUTO:
        return True
    if isinstance(template, int) and not isinstance(template, bool):
        return template >= 0
    return isinstance(template, str) and "{}" in template
