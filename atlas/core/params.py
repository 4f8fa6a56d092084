"""What a discovery run is asked to do: its parameters and their validation.

Kept free of torch so that the API and the job queue can validate a request without loading the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["eap", "eap-ig"]
Ablation = Literal["corrupt", "zero", "mean"]
Level = Literal["edge", "node"]
METHODS = ("eap", "eap-ig")
ABLATIONS = ("corrupt", "zero", "mean")
LEVELS = ("edge", "node")
METRICS = ("logprob", "logit-diff")
# Paper-style default size. Yao et al. report circuits of a few hundred edges; on SmolLM2 (123,211 edges)
# 300 edges is 0.24% of the graph and recovers most of the model's Hit@10 (see README's figures).
DEFAULT_TOP_N = 300
# Node-level default: about a quarter of the heads and MLPs of a small model.
DEFAULT_TOP_N_NODES = 20


class DiscoveryError(ValueError):
    """Discovery cannot run as asked; the message says why."""


@dataclass(frozen=True)
class DiscoveryParams:
    method: Method = "eap-ig"
    ig_steps: int = 5
    metric: str = "logprob"
    top_n: int | None = None  # None: DEFAULT_TOP_N edges, or DEFAULT_TOP_N_NODES nodes at node level
    threshold: float | None = None  # used instead of top_n when given
    max_facts: int = 32
    heldout_fraction: float = 0.5  # of the known, paired facts, kept back for evaluation
    template: str | int | None = None
    ablation: Ablation = "corrupt"
    batch_size: int = 16
    seed: int = 0
    curve: bool = True
    known_only: bool = True  # drop facts whose object is not in the model's top 10, as the paper does
    level: Level | None = None  # "edge" or "node"; None: edge where the model allows it, else node

    def validate(self) -> None:
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (self.ig_steps >= 1, f"ig-steps must be at least 1, got {self.ig_steps}"),
            (self.metric in METRICS, f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}"),
            (
                self.ablation in ABLATIONS,
                f"ablation must be one of {', '.join(ABLATIONS)}, got {self.ablation!r}",
            ),
            (self.top_n is None or self.top_n >= 1, f"top-n must be at least 1, got {self.top_n}"),
            (self.max_facts >= 1, f"max-facts must be at least 1, got {self.max_facts}"),
            (
                0 <= self.heldout_fraction < 1,
                f"held-out fraction must be in [0, 1), got {self.heldout_fraction}",
            ),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.level in (None, *LEVELS), f"level must be one of {', '.join(LEVELS)}, got {self.level!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DiscoveryError(message)
