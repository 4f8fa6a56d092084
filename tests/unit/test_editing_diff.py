"""Circuit diff on hand-made circuits over a 2-layer, 2-head graph."""

from __future__ import annotations

import json

import pytest
import torch

from atlas.core.circuit import Circuit
from atlas.core.editing import circuit_diff
from atlas.core.graph import Graph

GRAPH = Graph(2, 2)


def circuit(*names: str) -> Circuit:
    edges = torch.zeros(GRAPH.n_writers, GRAPH.n_readers, dtype=torch.bool)
    for name in names:
        edges[GRAPH.parse_edge(name)] = True
    return Circuit(GRAPH, edges)


def scores(values: dict[str, float]) -> torch.Tensor:
    matrix = torch.zeros(GRAPH.n_writers, GRAPH.n_readers)
    for name, value in values.items():
        matrix[GRAPH.parse_edge(name)] = value
    return matrix


BEFORE = circuit("input->m0", "m0->logits", "input->a1.h0<q>", "a1.h0->logits")
AFTER = circuit("input->m0", "m0->logits", "input->m1", "m1->logits")


def test_nodes_and_edges_gained_and_lost() -> None:
    diff = circuit_diff(BEFORE, AFTER)
    assert diff.nodes_gained == ["m1"]
    assert diff.nodes_lost == ["a1.h0"]
    assert diff.nodes_kept == ["input", "m0", "logits"]
    assert sorted(diff.edges_gained) == ["input->m1", "m1->logits"]
    assert sorted(diff.edges_lost) == ["a1.h0->logits", "input->a1.h0<q>"]
    assert diff.n_edges_kept == 2 and diff.rescored == []
    assert diff.edge_jaccard == pytest.approx(2 / 6)
    assert diff.node_jaccard == pytest.approx(3 / 5)


def test_rescored_edges_sorted_by_change() -> None:
    before = scores({"input->m0": 1.0, "m0->logits": 2.0, "a1.h0->logits": 5.0})
    after = scores({"input->m0": 4.0, "m0->logits": 1.5, "m1->logits": 3.0})
    diff = circuit_diff(BEFORE, AFTER, before, after)
    assert [(c.edge, c.before, c.after, c.delta) for c in diff.rescored] == [
        ("input->m0", 1.0, 4.0, 3.0),
        ("m0->logits", 2.0, 1.5, -0.5),
    ]
    record = json.loads(json.dumps(diff.to_dict(), allow_nan=False))
    assert record["rescored"][0] == {"edge": "input->m0", "before": 1.0, "after": 4.0, "delta": 3.0}


def test_identical_and_empty_circuits() -> None:
    same = circuit_diff(BEFORE, BEFORE)
    assert not (same.nodes_gained or same.nodes_lost or same.edges_gained or same.edges_lost)
    assert same.edge_jaccard == same.node_jaccard == 1.0
    empty = circuit_diff(circuit(), circuit())
    assert empty.edge_jaccard == 1.0 and empty.nodes_kept == []


def test_mismatched_inputs() -> None:
    other = Circuit(Graph(3, 2), torch.zeros(Graph(3, 2).n_writers, Graph(3, 2).n_readers, dtype=torch.bool))
    with pytest.raises(ValueError, match="different graphs"):
        circuit_diff(BEFORE, other)
    with pytest.raises(ValueError, match="both circuits"):
        circuit_diff(BEFORE, AFTER, scores({}), None)
    with pytest.raises(ValueError, match="shape"):
        circuit_diff(BEFORE, AFTER, torch.zeros(2, 2), torch.zeros(2, 2))
