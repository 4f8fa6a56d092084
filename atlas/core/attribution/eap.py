"""Edge attribution patching (Syed et al.): the gradient at each reader's input on the clean run alone,
EAP-IG over inputs with one step."""

from __future__ import annotations

import torch

from atlas.core.attribution.eap_ig import EAPIGInputs
from atlas.core.graph import Graph
from atlas.core.metrics import Metric
from atlas.core.models import LoadedModel
from atlas.core.pairs import Batch


class EAP(EAPIGInputs):
    """Edge attribution patching (Syed et al.): one gradient, on the clean run."""

    def batch_scores(
        self,
        model: LoadedModel,
        graph: Graph,
        batch: Batch,
        metric: Metric,
        steps: int,
        ablation: str,
        level: str,
    ) -> torch.Tensor:
        return super().batch_scores(model, graph, batch, metric, 1, ablation, level)
