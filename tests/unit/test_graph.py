import pytest
import torch

from atlas.core.attribution import graph_of
from atlas.core.graph import Graph
from atlas.core.models import load_model


@pytest.mark.parametrize(("layers", "heads", "edges"), [(12, 12, 32_491), (24, 16, 231_877)])
def test_edge_counts_match_the_known_gpt2_graphs(layers: int, heads: int, edges: int) -> None:
    assert Graph(layers, heads).n_edges == edges


@pytest.mark.slow
@pytest.mark.parametrize(("name", "edges"), [("random-gpt2", 32_491), ("random-gpt2-medium", 231_877)])
def test_edge_counts_from_randomly_initialized_models_of_those_shapes(name: str, edges: int) -> None:
    model = load_model(name, device="cpu")
    assert graph_of(model).n_edges == edges


def test_writers_feed_only_later_readers() -> None:
    graph = Graph(2, 2)
    valid = graph.valid_edges
    assert graph.writer_names == ("input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1")
    # a head of layer 0 reads only the input; the MLP of layer 0 also reads layer 0's heads
    assert valid[:, graph.qkv_reader(0, 1, 1)].tolist() == [True] + [False] * 6
    assert valid[:, graph.mlp_reader(0)].tolist() == [True, True, True, False, False, False, False]
    # nothing reads the last MLP but the logits
    assert valid[graph.mlp_writer(1)].nonzero().flatten().tolist() == [graph.logits_reader]
    assert valid[:, graph.logits_reader].all()


def test_edge_names_round_trip() -> None:
    graph = Graph(3, 4)
    for writer, reader in torch.nonzero(graph.valid_edges)[::37].tolist():
        name = graph.edge_name(writer, reader)
        assert graph.parse_edge(name) == (writer, reader)
    assert graph.edge_name(graph.head_writer(0, 1), graph.qkv_reader(2, 0, 3)) == "a0.h1->a2.h3<q>"
    with pytest.raises(ValueError, match=r"no edge named 'a9\.h0->logits'"):
        graph.parse_edge("a9.h0->logits")
