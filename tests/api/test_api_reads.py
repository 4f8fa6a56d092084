"""Read endpoints on both backends: pages, filters, one circuit, re-cuts, exports, components, comparisons,
and errors (404 for unknown things, 422 naming the field)."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pytest
from api_helpers import MODELS, PARAMS, RELATIONS, Catalogue, RecordingSender, make_client, store_synthetic
from fastapi.testclient import TestClient
from recurrence_check import expected_recurrence, stored_circuits
from sqlalchemy import text

from atlas.db.recut import GraphIndex, load_scores
from atlas.spec.corpus import bundled_corpus_path, load_corpus


def test_models_page_and_cursor(client: TestClient) -> None:
    first = client.get("/models", params={"limit": 1}).json()
    assert [m["name"] for m in first["items"]] == ["toy-a"]
    assert first["items"][0]["n_circuits"] == len(RELATIONS) + 3
    second = client.get("/models", params={"limit": 1, "after": first["next"]}).json()
    assert [m["name"] for m in second["items"]] == ["toy-b"] and second["next"] is None
    assert second["items"][0]["weights_sha256"] == "b" * 64


def test_relations_with_categories_and_fact_counts(client: TestClient) -> None:
    page = client.get("/relations", params={"limit": 500}).json()
    by_name = {r["name"]: r for r in page["items"]}
    assert len(by_name) == len(load_corpus(bundled_corpus_path())) and page["next"] is None
    capital = by_name["country_capital_city"]
    assert capital["category"] == "factual" and capital["n_facts"] >= 20 and capital["n_circuits"] == 3
    factual = client.get("/relations", params={"category": "factual"}).json()["items"]
    assert factual and {r["category"] for r in factual} == {"factual"}
    assert client.get("/relations/name_gender").json()["category"] == "bias"
    missing = client.get("/relations/no_such_relation")
    assert missing.status_code == 404 and "unknown relation 'no_such_relation'" in missing.json()["message"]


def test_facts_paged(client: TestClient) -> None:
    first = client.get("/facts", params={"relation": "country_capital_city", "limit": 5}).json()
    assert len(first["items"]) == 5 and first["next"] == first["items"][-1]["id"]
    rest = client.get("/facts", params={"relation": "country_capital_city", "after": first["next"]}).json()
    ids = [f["id"] for f in first["items"] + rest["items"]]
    assert ids == sorted(set(ids))
    assert {"subject", "object", "relation"} <= set(first["items"][0])
    assert client.get("/facts", params={"relation": "nope"}).status_code == 404


def test_circuit_listing_filters_and_keyset_pages(client: TestClient, catalogue: Catalogue) -> None:
    every = client.get("/circuits", params={"limit": 500}).json()
    assert len(every["items"]) == len(catalogue.circuits) + 1 and every["next"] is None
    seen, after = [], None
    while True:
        params = {"limit": 3} | ({"after": after} if after else {})
        page = client.get("/circuits", params=params).json()
        seen += [c["id"] for c in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [c["id"] for c in every["items"]]
    eap = client.get("/circuits", params={"model": "toy-a", "method": "eap"}).json()["items"]
    assert {(c["model"], c["method"]) for c in eap} == {("toy-a", "eap")} and len(eap) == 3
    factual = client.get("/circuits", params={"category": "factual", "model": "toy-b"}).json()["items"]
    assert {c["relation"] for c in factual} == {"country_capital_city", "country_language"}
    one = client.get("/circuits", params={"relation": "name_gender"}).json()["items"]
    assert {c["model"] for c in one} == {"toy-a", "toy-b"}
    assert one[0]["hit_circuit"] == 0.75 and one[0]["faithfulness"] == 0.75


def test_listing_errors_name_the_problem(client: TestClient) -> None:
    unknown = client.get("/circuits", params={"model": "gpt-17"})
    assert unknown.status_code == 404
    assert "unknown model 'gpt-17'" in unknown.json()["message"] and "toy-a" in unknown.json()["message"]
    bad = client.get("/circuits", params={"method": "magic", "limit": 0})
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"query.method", "query.limit"}
    assert "query.limit" in bad.json()["message"]
    assert client.get("/circuits", params={"relation": "nope"}).status_code == 404
    assert client.get("/circuits", params={"after": 2**40}).status_code == 422
    path = client.get("/no/such/path")
    assert path.status_code == 404 and "/docs" in path.json()["message"]


def test_one_circuit_in_full(client: TestClient, catalogue: Catalogue) -> None:
    circuit_id = catalogue.circuits[("toy-a", "country_capital_city", "eap-ig")]
    detail = client.get(f"/circuits/{circuit_id}").json()
    assert detail["id"] == circuit_id and detail["model"] == "toy-a" and detail["method"] == "eap-ig"
    assert len(detail["edges"]) == detail["n_edges"] and detail["edges"][0]["score"] is not None
    scores = [abs(e["score"]) for e in detail["edges"]]
    assert scores == sorted(scores, reverse=True)
    assert {n["node"] for n in detail["nodes"]} >= {"input", "logits"}
    assert detail["evaluations"]["discovery"]["hit_at_10"]["circuit"] == 0.75
    assert detail["evaluations"]["heldout"]["faithfulness"] is None  # NaN is null on the wire
    assert detail["run"]["top_n"] == PARAMS.top_n and detail["run"]["ig_steps"] == 2
    reproduce = detail["reproducibility"]
    assert reproduce["model"]["weights_sha256"] == "a" * 64 and reproduce["code_version"]
    assert reproduce["relation"]["content_sha256"] == reproduce["corpus_hash"]
    missing = client.get("/circuits/999999")
    assert missing.status_code == 404 and missing.json()["message"] == "no circuit with id 999999"
    assert client.get("/circuits/0").status_code == 422
    assert client.get("/circuits/abc").json()["errors"][0]["field"] == "path.circuit_id"


def test_recut_at_the_stored_size_is_the_stored_circuit(client: TestClient, catalogue: Catalogue) -> None:
    circuit_id = catalogue.circuits[("toy-b", "name_gender", "eap-ig")]
    stored = client.get(f"/circuits/{circuit_id}").json()
    same = client.get(f"/circuits/{circuit_id}/recut", params={"top_n": PARAMS.top_n}).json()
    assert {e["edge"] for e in same["edges"]} == {e["edge"] for e in stored["edges"]}
    assert {n["node"] for n in same["nodes"]} == {n["node"] for n in stored["nodes"]}
    bigger = client.get(f"/circuits/{circuit_id}/recut", params={"top_n": 80}).json()
    assert bigger["n_edges"] >= same["n_edges"] and bigger["top_n"] == 80
    assert client.get(f"/circuits/{circuit_id}/recut", params={"top_n": 0}).json()["n_edges"] == 0
    assert client.get(f"/circuits/{circuit_id}/recut").status_code == 422  # top_n is required
    node = client.get(f"/circuits/{catalogue.node_circuit}/recut", params={"top_n": 2}).json()
    assert node["level"] == "node" and len(node["nodes"]) == 4  # input, 2 chosen, logits


def test_dot_export(client: TestClient, catalogue: Catalogue) -> None:
    circuit_id = catalogue.circuits[("toy-a", "name_gender", "eap-ig")]
    response = client.get(f"/circuits/{circuit_id}/dot")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/vnd.graphviz")
    text = response.text
    assert text.startswith(f"digraph circuit_{circuit_id} {{") and text.rstrip().endswith("}")
    detail = client.get(f"/circuits/{circuit_id}").json()
    assert text.count(" -> ") == detail["n_edges"]
    for node in detail["nodes"]:
        assert f'"{node["node"]}" [fillcolor=' in text


def test_eap_ig_graph_json(client: TestClient, catalogue: Catalogue) -> None:
    circuit_id = catalogue.circuits[("toy-a", "country_language", "eap")]
    graph_json = client.get(f"/circuits/{circuit_id}/eap-ig").json()
    graph = GraphIndex(2, 4)
    assert graph_json["cfg"] == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 64}
    assert list(graph_json["nodes"]) == list(graph.node_names)
    assert len(graph_json["edges"]) == graph.n_edges
    detail = client.get(f"/circuits/{circuit_id}").json()
    in_graph = {name for name, e in graph_json["edges"].items() if e["in_graph"]}
    assert in_graph == {e["edge"] for e in detail["edges"]}
    scores = load_scores(catalogue.engine, circuit_id).scores
    for name, entry in graph_json["edges"].items():
        writer, _, reader = name.partition("->")
        expected = scores[graph.writer_index[writer], graph.reader_index[reader]]
        assert np.isclose(entry["score"], expected)
    nodes_in = {n for n, e in graph_json["nodes"].items() if e["in_graph"]}
    assert nodes_in == {n["node"] for n in detail["nodes"]}
    node_level = client.get(f"/circuits/{catalogue.node_circuit}/eap-ig").json()
    assert "score" in node_level["nodes"]["a0.h0"]


# ------------------------------------------------------------------- the catalogue read back by hand, in SQL
# The query module reads PostgreSQL's member-set columns and SQLite's node rows; these read the node and edge
# rows with plain SQL on both backends and count in Python.


def _rows(catalogue: Catalogue, sql: str, **params: Any) -> list[Any]:
    with catalogue.engine.connect() as connection:
        return list(connection.execute(text(sql), params))


def _graph_order(layer: int | None, head: int | None) -> tuple[int, int]:
    return (layer or 0, head if head is not None else 1 << 30)


def recurring_by_hand(
    catalogue: Catalogue,
    model: str,
    min_count: int = 2,
    category: str | None = None,
    method: str | None = None,
) -> list[dict[str, Any]]:
    where = ["m.name = :model", "cn.in_circuit", "comp.kind IN ('head', 'mlp')"]
    where += ["rel.category = :category"] if category else []
    where += ["r.method = :method"] if method else []
    rows = _rows(
        catalogue,
        "SELECT comp.name, comp.kind, comp.layer, comp.head, rel.name FROM circuit_nodes cn "
        "JOIN components comp ON comp.id = cn.component_id JOIN circuits c ON c.id = cn.circuit_id "
        "JOIN runs r ON r.id = c.run_id JOIN models m ON m.id = r.model_id "
        "JOIN relations rel ON rel.id = r.relation_id WHERE " + " AND ".join(where),
        model=model,
        category=category,
        method=method,
    )
    found: dict[str, dict[str, Any]] = {}
    for name, kind, layer, head, relation in rows:
        entry = found.setdefault(name, {"component": name, "kind": kind, "layer": layer, "head": head})
        entry.setdefault("relations", set()).add(relation)
    listed = [
        {**e, "n_relations": len(e["relations"]), "relations": sorted(e["relations"])}
        for e in found.values()
        if len(e["relations"]) >= min_count
    ]
    return sorted(listed, key=lambda e: (-e["n_relations"], *_graph_order(e["layer"], e["head"])))


def members_by_hand(
    catalogue: Catalogue, ids: list[int]
) -> tuple[dict[int, set[str]], dict[int, set[str]], dict]:
    """Each circuit's heads and MLPs and its edge names (`w->r<port>`), and the graph order of the nodes."""
    listed = ", ".join(str(int(i)) for i in ids)
    nodes: dict[int, set[str]] = {i: set() for i in ids}
    order = {}
    for circuit_id, name, layer, head in _rows(
        catalogue,
        "SELECT cn.circuit_id, comp.name, comp.layer, comp.head FROM circuit_nodes cn "
        "JOIN components comp ON comp.id = cn.component_id "
        f"WHERE cn.circuit_id IN ({listed}) AND cn.in_circuit AND comp.kind IN ('head', 'mlp')",
    ):
        nodes[circuit_id].add(name)
        order[name] = _graph_order(layer, head)
    edges: dict[int, set[str]] = {i: set() for i in ids}
    for circuit_id, writer, reader, port in _rows(
        catalogue,
        "SELECT ce.circuit_id, w.name, r.name, ce.port FROM circuit_edges ce "
        "JOIN components w ON w.id = ce.writer_id JOIN components r ON r.id = ce.reader_id "
        f"WHERE ce.circuit_id IN ({listed}) AND ce.in_circuit",
    ):
        edges[circuit_id].add(f"{writer}->{reader}<{port}>" if port else f"{writer}->{reader}")
    return nodes, edges, order


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def _as_counted(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The counts of the answer (its statistics are checked against the plain computation below), in
    recurring_by_hand's order: most relations first, then graph order."""
    keys = ("component", "kind", "layer", "head", "n_relations", "relations")
    listed = [{key: c[key] for key in keys} for c in components]
    return sorted(listed, key=lambda e: (-e["n_relations"], *_graph_order(e["layer"], e["head"])))


def test_recurring_components(client: TestClient, catalogue: Catalogue) -> None:
    body = client.get("/components/recurring", params={"model": "toy-a", "min_count": 2}).json()
    assert _as_counted(body["components"]) == recurring_by_hand(catalogue, "toy-a", 2) and body["components"]
    counted = (body["n_relations"], body["n_circuits"], body["n_unmet"])
    assert counted == (len(RELATIONS) + 1, len(RELATIONS) + 3, 0)  # the node circuit's relation is a fifth
    top = body["components"][0]
    assert top["n_relations"] == len(top["relations"]) >= 2
    assert len({c["n_relations"] for c in body["components"]}) > 1  # the order by count is exercised
    factual = client.get(
        "/components/recurring", params={"model": "toy-a", "category": "factual", "method": "eap-ig"}
    ).json()["components"]
    assert (
        _as_counted(factual) == recurring_by_hand(catalogue, "toy-a", 2, category="factual", method="eap-ig")
        and factual
    )
    assert all(set(c["relations"]) <= {"country_capital_city", "country_language"} for c in factual)
    everything = client.get("/components/recurring", params={"model": "toy-b", "min_count": 1}).json()
    assert _as_counted(everything["components"]) == recurring_by_hand(catalogue, "toy-b", 1)
    unknown = client.get("/components/recurring", params={"model": "nope"})
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["message"]
    missing = client.get("/components/recurring")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "query.model"


def test_recurring_against_the_plain_computation(client: TestClient, catalogue: Catalogue) -> None:
    """toy-b: one circuit per relation; toy-a: two (EAP and EAP-IG) for two relations, the node-level circuit
    of a fifth; checked against the statistics computed from the stored rows the plain way."""
    for model in ("toy-a", "toy-b"):
        body = client.get("/components/recurring", params={"model": model, "min_count": 1}).json()
        want = expected_recurrence(stored_circuits(catalogue.engine, model))
        assert {c["component"] for c in body["components"]} == {n for n, e in want.items() if e.count}
        for c in body["components"]:
            e = want[c["component"]]
            assert (c["n_relations"], c["relations"]) == (e.count, e.relations)
            assert c["expected"] == pytest.approx(e.expected, rel=1e-9)
            assert c["enrichment"] == pytest.approx(e.enrichment, rel=1e-9)
            assert (c["p_value"], c["q_value"]) == (pytest.approx(e.p_value), pytest.approx(e.q_value))
            assert c["generic"] is None and c["roles"] == {}
            assert 0.3 <= c["mean_stability"] <= 1.0
        cut = sorted(e.q_value for e in want.values() if e.count)[len(body["components"]) // 2]
        some = client.get(
            "/components/recurring", params={"model": model, "min_count": 1, "max_q": cut}
        ).json()
        assert [c["component"] for c in some["components"]] == [
            c["component"] for c in body["components"] if c["q_value"] <= cut
        ]
        assert some["max_q"] == cut
        steady = client.get(
            "/components/recurring", params={"model": model, "min_count": 1, "min_stability": 0.65}
        ).json()["components"]
        assert [c["component"] for c in steady] == [
            c["component"] for c in body["components"] if c["mean_stability"] >= 0.65
        ]


def test_recurring_bad_values_are_422(client: TestClient) -> None:
    for params, field in (
        ({"max_q": 2}, "query.max_q"),
        ({"max_q": -0.5}, "query.max_q"),
        ({"max_q": "nan"}, "query.max_q"),
        ({"min_stability": -1}, "query.min_stability"),
        ({"min_stability": 1.01}, "query.min_stability"),
        ({"min_count": 0}, "query.min_count"),
        ({"exclude_generic": "perhaps"}, "query.exclude_generic"),
        ({"category": "gossip"}, "query.category"),
    ):
        answer = client.get("/components/recurring", params={"model": "toy-a", **params})
        assert answer.status_code == 422, (params, answer.text)
        assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_circuit_members_carry_their_stability(client: TestClient, catalogue: Catalogue) -> None:
    from sqlalchemy import select

    from atlas.db.models import CircuitEdge, CircuitNode, Component

    circuit_id = catalogue.circuits[("toy-a", "country_capital_city", "eap-ig")]
    detail = client.get(f"/circuits/{circuit_id}").json()
    with catalogue.engine.connect() as connection:
        nodes = dict(
            connection.execute(
                select(Component.name, CircuitNode.stability)
                .join(Component, CircuitNode.component_id == Component.id)
                .where(CircuitNode.circuit_id == circuit_id, CircuitNode.in_circuit)
            ).all()
        )
        edges = connection.execute(
            select(CircuitEdge.stability).where(CircuitEdge.circuit_id == circuit_id, CircuitEdge.in_circuit)
        ).scalars()
        edge_shares = sorted(edges)
    assert {n["node"]: n["stability"] for n in detail["nodes"]} == nodes
    assert all(v is not None for v in nodes.values())
    assert sorted(e["stability"] for e in detail["edges"]) == edge_shares


def test_one_component_across_relations_models_and_edits(client: TestClient) -> None:
    recurring = client.get("/components/recurring", params={"model": "toy-a"}).json()["components"]
    name = recurring[0]["component"]
    body = client.get(f"/components/{name}").json()
    assert body["component"] == name and body["edits"] == []
    toy_a = next(m for m in body["models"] if m["model"] == "toy-a")
    assert {r["relation"] for r in toy_a["relations"]} == set(recurring[0]["relations"])
    assert toy_a["n_circuits"] == sum(len(r["circuits"]) for r in toy_a["relations"])
    assert 0 < toy_a["relative_depth"] < 1
    only_b = client.get("/components/m0", params={"model": "toy-b"}).json()
    assert [m["model"] for m in only_b["models"]] in ([], ["toy-b"]) and only_b["kind"] == "mlp"
    assert client.get("/components/a7.h3", params={"model": "toy-a"}).status_code == 404
    assert client.get("/components/banana").status_code == 422


def test_a_component_in_an_edit(catalogue: Catalogue, sender: RecordingSender) -> None:
    from sqlalchemy import select

    from atlas.db.models import Component, Edit, EditComponent, Model, Relation
    from atlas.db.store import transaction

    with make_client(catalogue, sender) as client:
        assert client.get("/components/a1.h2", params={"model": "toy-a"}).json()["edits"] == []
        with transaction(catalogue.engine, write=True) as session:
            model_id = session.scalar(select(Model.id).where(Model.name == "toy-a"))
            relation_id = session.scalar(select(Relation.id).where(Relation.name == "country_capital_city"))
            component_id = session.scalar(
                select(Component.id).where(Component.model_id == model_id, Component.name == "a1.h2")
            )
            edit = Edit(
                model_id=model_id,
                relation_id=relation_id,
                subject="France",
                prompt="The capital of France is",
                old_object="Paris",
                new_object="Rome",
                method="rome",
                layer=1,
                params={},
                request_key="k" * 64,
                edited_sha256="e" * 64,
                outcome={},
                update={},
                code_version="test",
            )
            session.add(edit)
            session.flush()
            session.add(EditComponent(edit_id=edit.id, component_id=component_id, change="gained"))
        edits = client.get("/components/a1.h2", params={"model": "toy-a"}).json()["edits"]
        assert [(e["subject"], e["new_object"], e["change"]) for e in edits] == [("France", "Rome", "gained")]


def test_compare(client: TestClient, catalogue: Catalogue) -> None:
    ids = [catalogue.circuits[("toy-a", r, "eap-ig")] for r in RELATIONS[:3]]
    body = client.get("/compare", params={"ids": ids}).json()
    nodes, edges, order = members_by_hand(catalogue, ids)
    shared_nodes, shared_edges = set.intersection(*nodes.values()), set.intersection(*edges.values())
    assert [c["id"] for c in body["circuits"]] == ids
    assert body["shared_nodes"] == sorted(shared_nodes, key=order.__getitem__) and shared_nodes
    assert body["shared_edges"] == sorted(shared_edges)
    assert body["node_jaccard"] == pytest.approx(len(shared_nodes) / len(set.union(*nodes.values())))
    assert body["edge_jaccard"] == pytest.approx(len(shared_edges) / len(set.union(*edges.values())))
    assert body["pairwise"] == [
        {
            "a": a,
            "b": b,
            "node_jaccard": pytest.approx(_jaccard(nodes[a], nodes[b])),
            "edge_jaccard": pytest.approx(_jaccard(edges[a], edges[b])),
        }
        for a, b in combinations(ids, 2)
    ]
    assert 0 < body["node_jaccard"] < 1
    assert client.get("/compare", params={"ids": [ids[0]]}).status_code == 422
    same = client.get("/compare", params={"ids": [ids[0], ids[0]]})
    assert same.status_code == 422 and "two different" in same.json()["message"]
    missing = client.get("/compare", params={"ids": [ids[0], 999999]})
    assert missing.status_code == 404 and "999999" in missing.json()["message"]


def test_overlap_matrix(client: TestClient, catalogue: Catalogue) -> None:
    body = client.get("/overlap", params={"model": "toy-b"}).json()
    n = len(RELATIONS)
    assert len(body["circuits"]) == n and len(body["node_jaccard"]) == n
    ids = [c["id"] for c in body["circuits"]]
    assert sorted(ids) == sorted(catalogue.circuits[("toy-b", r, "eap-ig")] for r in RELATIONS)
    nodes, edges, _ = members_by_hand(catalogue, ids)
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            assert body["node_jaccard"][i][j] == pytest.approx(_jaccard(nodes[a], nodes[b])), (a, b)
            assert body["edge_jaccard"][i][j] == pytest.approx(_jaccard(edges[a], edges[b])), (a, b)
    assert len({round(x, 6) for row in body["edge_jaccard"] for x in row}) > 2
    assert client.get("/overlap", params={"model": "nope"}).status_code == 404


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/models", "/relations", "/circuits", "/circuits/{circuit_id}", "/components/recurring"):
        assert "get" in spec["paths"][path]
    assert "post" in spec["paths"]["/jobs"] and "get" in spec["paths"]["/jobs/{job_id}"]
    assert "/compare" in spec["paths"] and "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200
    assert client.get("/health").json()["status"] == "ok"


def test_a_new_circuit_shows_at_once(catalogue: Catalogue, sender: RecordingSender) -> None:
    """Cached answers are dropped when the catalogue changes (runs last in this module: it adds a circuit)."""
    with make_client(catalogue, sender) as client:
        before = client.get("/circuits", params={"relation": "verb_past_tense"}).json()["items"]
        recurring = client.get("/components/recurring", params={"model": "toy-b", "min_count": 1}).json()
        assert before == []
        new = store_synthetic(catalogue.engine, MODELS[1], "verb_past_tense", PARAMS, 1234)
        after = client.get("/circuits", params={"relation": "verb_past_tense"}).json()["items"]
        assert [c["id"] for c in after] == [new]
        again = client.get("/components/recurring", params={"model": "toy-b", "min_count": 1}).json()
        relations = {r for c in again["components"] for r in c["relations"]}
        assert "verb_past_tense" in relations and again != recurring
