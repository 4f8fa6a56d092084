import math

import pytest

from atlas.core.discover import DiscoveryError, DiscoveryParams, discover


def test_discovery_on_a_tiny_model_reports_a_consistent_circuit(tiny_llama, relations) -> None:
    params = DiscoveryParams(
        method="eap-ig", ig_steps=2, top_n=30, max_facts=6, known_only=False, batch_size=4
    )
    result = discover(tiny_llama, relations["country_language"], params)
    summary = result.summary()
    for field in (
        "model",
        "relation",
        "method",
        "n_facts",
        "n_nodes",
        "n_edges",
        "hit_at_10",
        "faithfulness",
        "seconds",
    ):
        assert field in summary
    assert summary["n_edges"] == result.circuit.n_edges <= 30
    assert summary["n_facts"] == result.counts.discovery == 6
    assert result.counts.heldout >= 1
    assert set(summary["hit_at_10"]) == {"original", "circuit", "random"}
    assert result.random.n_edges >= result.circuit.n_edges
    curve = result.curve
    assert curve is not None and [p.percent for p in curve.points][-1] == 100
    assert curve.points[-1].faithfulness == pytest.approx(1.0, abs=1e-4)  # the whole graph is the model
    # Signed ranking keeps the edges that push toward the answer first, so a partial circuit may exceed 1;
    # the area (x in [0, 1]) is still bounded by the curve's highest point.
    assert 0 < curve.area <= max(p.faithfulness for p in curve.points)
    assert math.isfinite(summary["faithfulness"])
    # circuit, random and empty on each split, and the curve's sizes (some prune to the same edges)
    assert 6 < summary["circuits_evaluated"] <= 6 + len(curve.points)


def test_discovery_and_heldout_facts_are_disjoint_and_seeded(tiny_llama, relations) -> None:
    params = DiscoveryParams(ig_steps=1, top_n=10, max_facts=4, known_only=False, curve=False)
    first = discover(tiny_llama, relations["country_capital_city"], params)
    again = discover(tiny_llama, relations["country_capital_city"], params)
    assert first.circuit.edge_names() == again.circuit.edge_names()
    assert first.discovery.n_facts == 4 and first.heldout is not None and first.heldout.n_facts == 4


def test_a_relation_the_model_does_not_know_is_refused_with_counts(tiny_llama, relations) -> None:
    with pytest.raises(
        DiscoveryError, match=r"no fact of relation 'country_capital_city' survives filtering"
    ):
        discover(tiny_llama, relations["country_capital_city"], DiscoveryParams())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "acdc"}, "method must be one of"),
        ({"ig_steps": 0}, "ig-steps must be an integer from 1"),
        ({"top_n": 0}, "top-n must be at least 1"),
        ({"metric": "kl"}, "metric must be one of"),
        ({"level": "head"}, "level must be one of"),
    ],
)
def test_bad_parameters_are_named(change, message, tiny_llama, relations) -> None:
    with pytest.raises(DiscoveryError, match=message):
        discover(tiny_llama, relations["country_capital_city"], DiscoveryParams(**change))


def test_fact_circuit_scores_one_fact_even_with_an_object_the_relation_lacks(tiny_llama, relations) -> None:
    from dataclasses import replace

    from atlas.core.discover import fact_circuit
    from atlas.spec.corpus import Fact

    relation = relations["country_language"]
    fact = Fact(relation.facts[0].subject, "Klingon")  # not any fact's object
    params = DiscoveryParams(method="eap", top_n=25)
    found = fact_circuit(tiny_llama, relation, fact, params)
    assert found.fact == fact and found.partner.object != "Klingon" and found.partner.subject != fact.subject
    assert found.level == "edge" and 0 < found.circuit.n_edges <= 25
    assert found.scores.shape == (found.circuit.graph.n_writers, found.circuit.graph.n_readers)
    # Scored on that fact alone: another object gives other scores.
    other = fact_circuit(tiny_llama, relation, relation.facts[0], params)
    assert not found.scores.allclose(other.scores)
    nodes = fact_circuit(tiny_llama, relation, fact, replace(params, level="node", top_n=4))
    assert nodes.level == "node" and nodes.scores.ndim == 1
    lonely = replace(relation, facts=(relation.facts[0],))
    with pytest.raises(DiscoveryError, match="can corrupt"):
        fact_circuit(tiny_llama, lonely, fact, params)


def test_template_auto_takes_the_template_the_model_knows_most_facts_under(tiny_llama, relations) -> None:
    from atlas.core.evaluation import known_mask
    from atlas.core.pairs import make_batches, make_pairs, tokenize_facts

    relation = relations["country_language"]  # one zero-shot template, two alternative wordings
    params = DiscoveryParams(
        template="auto", top_n=20, max_facts=4, known_only=False, curve=False, bootstrap=0
    )
    result = discover(tiny_llama, relation, params)
    choice = result.template
    every = relation.prompt_templates_zs + relation.prompt_templates
    assert choice is not None and set(choice.known) == set(range(len(every))) and len(every) == 3
    for index, known in choice.known.items():  # counted by hand, every fact (the relation is small)
        tokenized = tokenize_facts(
            relation, relation.facts, tiny_llama.encode, tiny_llama.encode_continuation, index
        )
        pairs = make_pairs(tokenized, tokenized, seed=params.seed).pairs
        assert choice.checked[index] == len(pairs)
        assert known == sum(known_mask(tiny_llama, make_batches(pairs, len(pairs), 0)[0]))
    best = max(choice.known.values())
    assert choice.index == min(i for i, known in choice.known.items() if known == best)
    assert choice.template == every[choice.index]
    assert result.summary()["template"]["index"] == choice.index
