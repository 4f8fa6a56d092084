"""The null for recurring components: how likely a random circuit of a circuit's own size is to hold each
component (head or MLP).

A component recurs across relations when many relations' circuits hold it; it recurs *meaningfully* only
if that is more than circuits of those sizes would hold it by chance. The chance is measured with a random
circuit holding as many heads and MLPs as the circuit: at edge level a connected random circuit (the union
of random input -> logits paths, as the atlas's random baseline) grown until it holds that many, sampled
`NULL_SAMPLES` times; at node level that many heads and MLPs drawn uniformly (exact). Matching the number of
components, not of edges, is what makes the null able to detect anything: a random circuit of a faithful
circuit's edge count (often 1,000+ on SmolLM2) reaches most of the model's heads and MLPs, while the
circuit itself packs its edges among far fewer. No model is needed, so the null is computed when a circuit
is stored and the recurrence query only sums stored vectors.
"""

from __future__ import annotations

import numpy as np

from atlas.spec.graph import GraphIndex, random_components

NULL_SAMPLES = 200
NULL_DTYPE = "<f4"


def inclusion_probabilities(
    graph: GraphIndex, level: str, components: int, samples: int = NULL_SAMPLES, seed: int = 0
) -> np.ndarray:
    """float32 `[n_writers]`: each writer's probability to be one of a random circuit's `components` heads
    and MLPs: a connected random circuit at edge level (estimated from `samples` draws, smoothed away from 0
    and 1 by half a count), uniform draws at node level (exact: components / n_components). `input` is never
    a component: 0."""
    out = np.zeros(graph.n_writers, dtype=np.float64)
    k = min(max(components, 0), graph.n_components)
    if level == "node":
        out[1:] = k / graph.n_components
    else:
        rng = np.random.default_rng(seed)
        counts = np.zeros(graph.n_writers, dtype=np.int64)
        for _ in range(samples):
            counts += random_components(graph, k, rng)
        out[1:] = (counts[1:] + 0.5) / (samples + 1)
    return out.astype(np.float32)
