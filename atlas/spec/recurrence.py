"""The null for recurring components: how likely a random circuit of a circuit's own size is to hold each
component (head or MLP).

A component recurs across relations when many relations' circuits hold it; it recurs *meaningfully* only
if that is more than circuits of those sizes would hold it by chance. The chance is measured with the
atlas's own random baseline (a connected random circuit of the same number of edges, or the same number of
heads and MLPs at node level), sampled `NULL_SAMPLES` times per size: no model is needed, so it is computed
when a circuit is stored and the recurrence query only sums stored vectors.
"""

from __future__ import annotations

import numpy as np

from atlas.spec.graph import GraphIndex, kept_components, random_circuit_edges

NULL_SAMPLES = 200
NULL_DTYPE = "<f4"


def inclusion_probabilities(
    graph: GraphIndex, level: str, size: int, samples: int = NULL_SAMPLES, seed: int = 0
) -> np.ndarray:
    """float32 `[n_writers]`: each writer's probability to be a component of a random circuit of `size`
    edges (edge level, estimated from `samples` draws, smoothed away from 0 and 1 by half a count) or `size`
    heads and MLPs (node level, exact: size / n_components). `input` is never a component: 0."""
    out = np.zeros(graph.n_writers, dtype=np.float64)
    if level == "node":
        out[1:] = min(size, graph.n_components) / graph.n_components
    else:
        rng = np.random.default_rng(seed)
        counts = np.zeros(graph.n_writers, dtype=np.int64)
        for _ in range(samples):
            counts += kept_components(graph, random_circuit_edges(graph, size, rng))
        out[1:] = (counts[1:] + 0.5) / (samples + 1)
    return out.astype(np.float32)
