"""Head roles in the catalogue: discovery computes each circuit head's role, the store writes them with the
circuit (one transaction), and the queries read them back: per circuit, recurring heads of one role, and
heads across models by role."""

from __future__ import annotations

from dataclasses import replace

import pytest
from db_helpers import CODE_VERSION, HAND, Discovered, with_circuit
from sqlalchemy import Engine, func, select

from atlas.core.roles import HeadRole, HeadRoles, RoleThresholds
from atlas.db import CatalogueError
from atlas.db.cross_model import components_across_models
from atlas.db.models import HeadRole as HeadRoleRow
from atlas.db.queries import circuit_detail
from atlas.db.recurrence import recurring_components
from atlas.db.store import store_discovery


def test_discovery_gives_every_circuit_head_a_role(discovered: dict[str, Discovered]) -> None:
    for d in discovered.values():
        roles = d.result.roles
        assert roles is not None and roles.n_prompts == d.result.counts.discovery
        heads = [n for n in d.result.circuit.nodes if n.startswith("a")]
        assert [h.name for h in roles.heads] == heads
        for head in roles.heads:
            assert head.role == roles.thresholds.classify(head.subject_attention, head.relation_attention)
            assert 0 <= head.subject_attention <= 1 + 1e-5 and 0 <= head.relation_attention <= 1 + 1e-5
        summary = d.result.summary()
        assert [h["name"] for h in summary["heads"]] == heads
        assert summary["roles"]["counts"] == roles.counts()


def _with_roles(d: Discovered, edges: list[str], roles: dict[str, str]) -> object:
    """The hand-made circuit with hand-set roles for its heads (attention masses that give those roles)."""
    masses = {"mover": (0.9, 0.0), "relation": (0.0, 0.9), "mix": (0.5, 0.5), "other": (0.0, 0.0)}
    heads = [
        HeadRole(name, int(name[1:].split(".")[0]), int(name.split(".h")[1]), role, *masses[role])
        for name, role in roles.items()
    ]
    return replace(with_circuit(d.result, edges), roles=HeadRoles(RoleThresholds(), 4, heads))


def test_roles_are_stored_with_the_circuit_and_queried(
    engine: Engine, discovered: dict[str, Discovered], corpus_sha: str
) -> None:
    roles = {
        "name_gender": {"a0.h0": "mover", "a1.h2": "relation"},
        "object_superclass": {"a0.h0": "mover"},
        "substance_phase": {"a0.h0": "mix", "a1.h2": "relation", "a3.h3": "mover"},  # a3.h3 is not in it
    }
    ids = {}
    for name, edges in HAND.items():
        d = discovered[name]
        result = _with_roles(d, edges, roles[name])
        ids[name] = store_discovery(engine, result, d.model, d.relation, corpus_sha, CODE_VERSION)
    with engine.connect() as connection:
        # Only heads in the circuit get a row: a3.h3 is not in substance_phase's circuit.
        assert connection.execute(select(func.count()).select_from(HeadRoleRow)).scalar() == 5
    detail = circuit_detail(engine, ids["substance_phase"])
    by_node = {n["node"]: n for n in detail["nodes"]}
    assert by_node["a0.h0"]["role"] == "mix" and by_node["a1.h2"]["role"] == "relation"
    assert "role" not in by_node["input"]
    assert detail["roles"]["counts"] == {"mover": 1, "relation": 1, "mix": 1, "other": 0}  # as computed
    assert detail["roles"]["thresholds"] == {"mover": 0.3, "relation": 0.3}

    movers = recurring_components(engine, "tiny-llama", min_count=2, role="mover")
    assert [(c.component, c.relations) for c in movers] == [("a0.h0", ["name_gender", "object_superclass"])]
    relation_heads = recurring_components(engine, "tiny-llama", min_count=2, role="relation")
    assert [(c.component, c.n_relations) for c in relation_heads] == [("a1.h2", 2)]
    assert recurring_components(engine, "tiny-llama", min_count=1, role="other") == []
    with pytest.raises(CatalogueError, match="role must be one of"):
        recurring_components(engine, "tiny-llama", role="boss")

    groups = components_across_models(engine, bins=2, min_models=1, role="mover")
    assert [(g.kind, g.relations, g.n_circuits) for g in groups] == [
        ("head", ["name_gender", "object_superclass"], 2)
    ]


def test_the_catalogue_knows_the_same_roles_as_the_core() -> None:
    from atlas.core.roles import ROLES as CORE_ROLES
    from atlas.db.models import ROLES

    assert ROLES == CORE_ROLES
