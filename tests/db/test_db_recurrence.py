"""The recurring-components query against the null, on both backends: what the store keeps for it (the null,
member stability and roles), its answers against the statistics computed the plain way from the stored rows
(tests/recurrence_check.py), its filters and their bad values, the controls' generic flag, the rows fallback,
and a synthetic catalogue with one planted head (atlas.spec.recurrence_stats, the issue's "Done when")."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from db_helpers import CODE_VERSION, HAND, Discovered, with_circuit
from recurrence_check import expected_recurrence, stored_circuits, tail
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from atlas.core.circuit import Circuit as CoreCircuit
from atlas.core.graph import Graph
from atlas.db import CatalogueError
from atlas.db.models import ROLES, Circuit
from atlas.db.recurrence import recurrence_report, recurring_components
from atlas.db.store import ModelInfo, store_discovery
from atlas.spec.corpus import Relation
from atlas.spec.graph import GraphIndex, kept_components, random_circuit_edges
from atlas.spec.recurrence import inclusion_probabilities
from atlas.spec.recurrence_stats import GENERIC_ALPHA, PLUMBING, CircuitComponents, recurrence_table

CONTROL_EDGES = ["input->a0.h0<q>", "a0.h0->logits", "input->a1.h2<k>", "a1.h2->logits"]


@pytest.fixture
def ids(engine: Engine, discovered: dict[str, Discovered], corpus_sha: str) -> dict[str, int]:
    """The hand circuits A, B, C (tests/db/test_db_queries.py) by relation."""
    out = {}
    for name, edges in HAND.items():
        d = discovered[name]
        out[name] = store_discovery(
            engine, with_circuit(d.result, edges), d.model, d.relation, corpus_sha, CODE_VERSION
        )
    return out


def _store_controls(
    engine: Engine, discovered: dict[str, Discovered], corpus: dict[str, Relation], corpus_sha: str
) -> None:
    d = discovered["name_gender"]
    for name in ("copy_word", "copy_name"):
        result = replace(with_circuit(d.result, CONTROL_EDGES), relation=name, category="control")
        store_discovery(engine, result, d.model, corpus[name], corpus_sha, CODE_VERSION)


def test_the_store_keeps_the_null_and_each_members_stability_and_role(
    engine: Engine, ids: dict[str, int], discovered: dict[str, Discovered]
) -> None:
    graph = GraphIndex(3, 4)
    with Session(engine) as session:
        row = session.get_one(Circuit, ids["name_gender"])
        null, stability, roles = row.null_inclusion, row.member_stability, row.member_roles
        writers = np.frombuffer(row.node_set or b"", dtype="<i4").tolist()
        n_edges = row.n_edges
    assert n_edges == len(HAND["name_gender"])
    size = len(writers)  # the null matches the circuit's heads and MLPs
    want = inclusion_probabilities(graph, "edge", size, seed=size)
    assert null == np.asarray(want, dtype="<f4").tobytes()  # as atlas.db.store.null_columns documents it
    result = discovered["name_gender"].result
    assert result.stability is not None and result.roles is not None
    assert [graph.writer_names[w] for w in writers] == ["a0.h0", "m0", "a1.h2"]
    np.testing.assert_array_equal(
        np.frombuffer(stability or b"", dtype="<f4"), result.stability.nodes[writers]
    )
    role_of = {h.name: h.role for h in result.roles.heads}
    want_roles = [ROLES.index(role_of[n]) if n in role_of else -1 for n in ("a0.h0", "m0", "a1.h2")]
    assert np.frombuffer(roles or b"", dtype="i1").tolist() == want_roles


def test_recurring_components_against_the_plain_computation(
    engine: Engine, ids: dict[str, int], discovered: dict[str, Discovered]
) -> None:
    report = recurrence_report(engine, "tiny-llama", min_count=1)
    want = expected_recurrence(stored_circuits(engine, "tiny-llama"))
    assert (report.n_relations, report.n_circuits, report.n_unmet, report.controls) == (3, 3, 0, [])
    assert {c.component for c in report.components} == {name for name, e in want.items() if e.count}
    for c in report.components:
        e = want[c.component]
        assert (c.n_relations, c.relations) == (e.count, e.relations)
        assert c.expected == pytest.approx(e.expected, rel=1e-9)
        assert c.enrichment == pytest.approx(e.enrichment, rel=1e-9)
        assert c.p_value == pytest.approx(e.p_value, rel=1e-9)
        assert c.q_value == pytest.approx(e.q_value, rel=1e-9)
        assert c.plumbing == (e.expected / 3 >= PLUMBING)
        # mean stability and roles from the discovery results the hand circuits were cut from
        held = [discovered[r].result for r in c.relations]
        writer = GraphIndex(3, 4).writer_index[c.component]
        shares = [float(np.float32(r.stability.nodes[writer])) for r in held if r.stability is not None]
        assert c.mean_stability == pytest.approx(sum(shares) / len(shares), rel=1e-6)
        roles: dict[str, int] = {}
        for r in held:
            for head in r.roles.heads if r.roles else []:
                if head.name == c.component:
                    roles[head.role] = roles.get(head.role, 0) + 1
        assert c.roles == roles
    assert [c.q_value for c in report.components] == sorted(c.q_value for c in report.components)
    # a0.h0 is in all three circuits: its p-value is the product of its three null probabilities
    a0 = next(c for c in report.components if c.component == "a0.h0")
    nulls = [null["a0.h0"] for _, _, null in stored_circuits(engine, "tiny-llama")]
    assert a0.p_value == pytest.approx(math.prod(nulls), rel=1e-9)
    assert (a0.kind, a0.layer, a0.head, a0.n_relations) == ("head", 0, 0, 3)
    assert recurrence_report(engine, "no-such-model").components == []


def test_filters_and_their_bad_values(engine: Engine, ids: dict[str, int]) -> None:
    every = recurring_components(engine, "tiny-llama", min_count=1)
    q_values = sorted({c.q_value for c in every if c.q_value is not None})
    cut = q_values[len(q_values) // 2]
    assert [c.component for c in recurring_components(engine, "tiny-llama", min_count=1, max_q=cut)] == [
        c.component for c in every if c.q_value is not None and c.q_value <= cut
    ]
    assert [c.component for c in recurring_components(engine, "tiny-llama")] == [
        c.component for c in every if c.n_relations >= 2
    ]
    stabilities = sorted({c.mean_stability for c in every if c.mean_stability is not None})
    middle = stabilities[len(stabilities) // 2]
    stable = recurring_components(engine, "tiny-llama", min_count=1, min_stability=middle)
    assert [c.component for c in stable] == [
        c.component for c in every if c.mean_stability is not None and c.mean_stability >= middle
    ]
    assert recurring_components(engine, "tiny-llama", category="commonsense", min_count=1)[0].relations == [
        "object_superclass",
        "substance_phase",
    ]
    assert recurring_components(engine, "tiny-llama", method="eap") == []
    for bad, match in (
        ({"max_q": 2.0}, "max_q must be between 0 and 1"),
        ({"max_q": -0.1}, "max_q"),
        ({"max_q": math.nan}, "max_q"),
        ({"min_stability": -1.0}, "min_stability must be between 0 and 1"),
        ({"min_stability": 1.5}, "min_stability"),
        ({"min_count": 0}, "min_count must be at least 1"),
        ({"role": "boss"}, "role must be one of"),
    ):
        with pytest.raises(CatalogueError, match=match):
            recurring_components(engine, "tiny-llama", **bad)  # type: ignore[arg-type]


def test_circuits_that_missed_their_target_are_left_out(engine: Engine, ids: dict[str, int]) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(Circuit).where(Circuit.id == ids["substance_phase"]).values(target_met=False))
        session.execute(update(Circuit).where(Circuit.id == ids["name_gender"]).values(target_met=True))
    report = recurrence_report(engine, "tiny-llama", min_count=1)
    assert (report.n_relations, report.n_circuits, report.n_unmet) == (2, 2, 1)
    want = expected_recurrence(
        stored_circuits(engine, "tiny-llama", [ids["name_gender"], ids["object_superclass"]])
    )
    assert {c.component: (c.n_relations, pytest.approx(c.q_value)) for c in report.components} == {
        name: (e.count, e.q_value) for name, e in want.items() if e.count
    }
    everything = recurrence_report(engine, "tiny-llama", min_count=1, include_unmet=True)
    assert (everything.n_relations, everything.n_unmet) == (3, 0)


def test_controls_set_the_generic_flag(
    engine: Engine,
    ids: dict[str, int],
    discovered: dict[str, Discovered],
    corpus: dict[str, Relation],
    corpus_sha: str,
) -> None:
    _store_controls(engine, discovered, corpus, corpus_sha)
    report = recurrence_report(engine, "tiny-llama", min_count=1)
    assert report.controls == ["copy_name", "copy_word"]
    assert (report.n_relations, report.n_circuits) == (3, 3)  # controls are not counted with the relations
    knowledge = [c for c in stored_circuits(engine, "tiny-llama") if c[0] in HAND]
    want = expected_recurrence(knowledge)
    controls = [c for c in stored_circuits(engine, "tiny-llama") if c[0] not in HAND]
    flags = {}
    for c in report.components:
        assert c.q_value == pytest.approx(want[c.component].q_value)
        in_controls = sum(c.component in members for _, members, _ in controls)
        p = tail([null[c.component] for _, _, null in controls], in_controls)
        flags[c.component] = in_controls > 0 and p < GENERIC_ALPHA
        assert c.generic == flags[c.component], (c.component, in_controls, p)
    assert True in flags.values() and False in flags.values(), flags  # both kinds exercised
    kept = recurring_components(engine, "tiny-llama", min_count=1, exclude_generic=True)
    assert [c.component for c in kept] == [c.component for c in report.components if not c.generic]
    only = recurrence_report(engine, "tiny-llama", category="control", min_count=1)
    assert (only.n_relations, only.controls) == (2, ["copy_name", "copy_word"])
    assert {c.component for c in only.components} == {"a0.h0", "a1.h2"}
    factual = recurrence_report(engine, "tiny-llama", category="factual", min_count=1)
    assert (factual.n_relations, factual.components) == (0, [])


def test_circuits_without_the_stored_columns_read_their_rows(
    engine: Engine,
    ids: dict[str, int],
    discovered: dict[str, Discovered],
    corpus: dict[str, Relation],
    corpus_sha: str,
) -> None:
    """Rows written by hand, or stored before migrations 0003/0005/0008: members from circuit_nodes, roles
    from head_roles, the null computed from the circuit's size; the same answers."""
    _store_controls(engine, discovered, corpus, corpus_sha)
    queries = {
        "all": lambda: recurrence_report(engine, "tiny-llama", min_count=1).to_dict(),
        "movers": lambda: recurrence_report(engine, "tiny-llama", min_count=1, role="mover").to_dict(),
    }
    before = {name: query() for name, query in queries.items()}
    assert before["all"]["components"]
    blank = {"node_set": None, "member_stability": None, "member_roles": None, "null_inclusion": None}
    with Session(engine) as session, session.begin():
        session.execute(update(Circuit).where(Circuit.id == ids["name_gender"]).values(**blank))
    assert {name: query() for name, query in queries.items()} == before
    with Session(engine) as session, session.begin():
        session.execute(update(Circuit).values(**blank))
    assert {name: query() for name, query in queries.items()} == before


# ------------------------------------------------------------------------- a planted head, stored for real

BIG = Graph(8, 8)
PLANTED = BIG.head_writer(7, 7)


def _planted_catalogue(
    engine: Engine,
    seed: int,
    discovered: dict[str, Discovered],
    corpus: dict[str, Relation],
    corpus_sha: str,
) -> list[CircuitComponents]:
    """One random connected circuit per knowledge relation of the bundled corpus, each with the planted head
    on an input -> head -> logits path, stored with a model of an 8 x 8 graph; what was stored."""
    rng = np.random.default_rng(seed)
    template = discovered["name_gender"]
    model = replace(
        ModelInfo.of(template.model),
        name=f"planted-{seed}",
        n_layers=8,
        n_heads=8,
        weights_sha256=f"{seed:064x}",
    )
    empty = CoreCircuit(BIG, torch.zeros(BIG.n_writers, BIG.n_readers, dtype=torch.bool))
    stored = []
    for name in sorted(r for r in corpus if corpus[r].category != "control"):
        edges = random_circuit_edges(BIG, int(rng.integers(20, 61)), rng)
        edges[0, BIG.qkv_reader(7, 0, 7)] = True
        edges[PLANTED, BIG.logits_reader] = True
        result = replace(
            template.result,
            model=model.name,
            relation=name,
            category=corpus[name].category,
            circuit=CoreCircuit(BIG, torch.from_numpy(edges)),
            random=empty,
            scores=torch.rand(BIG.n_writers, BIG.n_readers) * BIG.valid_edges,
            stability=None,
            roles=None,
        )
        store_discovery(engine, result, model, corpus[name], corpus_sha, CODE_VERSION)
        kept = kept_components(BIG, edges)
        null = inclusion_probabilities(BIG, "edge", int(kept.sum()), seed=int(kept.sum()))
        stored.append(
            CircuitComponents(name, frozenset(BIG.writer_names[w] for w in np.flatnonzero(kept)), null)
        )
    return stored


@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_head_stands_out_of_a_stored_random_catalogue(
    engine: Engine, seed: int, discovered: dict[str, Discovered], corpus: dict[str, Relation], corpus_sha: str
) -> None:
    circuits = _planted_catalogue(engine, seed, discovered, corpus, corpus_sha)
    report = recurrence_report(engine, f"planted-{seed}", min_count=1)
    assert report.n_relations == len(circuits) == 10
    q = {c.component: c.q_value for c in report.components}
    planted = BIG.writer_names[PLANTED]
    assert q[planted] is not None and q[planted] < 0.01
    assert not [name for name, value in q.items() if name != planted and value is not None and value < 0.05]
    # the same answer as the in-memory table (the demo's) on what was stored
    table = {r.component: r for r in recurrence_table(BIG, circuits, max_q=None)}
    assert set(table) == set(q)
    for c in report.components:
        assert (c.n_relations, list(c.relations)) == (
            table[c.component].count,
            list(table[c.component].relations),
        )
        assert c.q_value == pytest.approx(table[c.component].q_value, rel=1e-9)


def test_circuits_show_carries_each_members_stability(
    engine: Engine, ids: dict[str, int], discovered: dict[str, Discovered]
) -> None:
    """`atlas circuits show` (circuit_detail): each node's and edge's bootstrap share, as discovered."""
    from atlas.db.queries import circuit_detail

    result = discovered["name_gender"].result
    assert result.stability is not None
    detail = circuit_detail(engine, ids["name_gender"])
    graph = GraphIndex(3, 4)
    for node in detail["nodes"]:
        if node["node"] == "logits":
            assert node["stability"] == 1.0
        else:
            want = float(np.float32(result.stability.nodes[graph.writer_index[node["node"]]]))
            assert node["stability"] == pytest.approx(want)
    for edge in detail["edges"]:
        w, r = graph.parse_edge(edge["edge"])
        assert edge["stability"] == pytest.approx(float(result.stability.edges[w, r]))
