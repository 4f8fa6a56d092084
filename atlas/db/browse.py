"""Read-side views of the catalogue the API and the CLI share, besides atlas.db.queries: models, relations and
facts (keyset pages), one circuit's reproducibility record, one component's appearances across relations,
models and edits, and a circuit as Graphviz DOT or as EAP-IG's graph JSON. Plain functions returning JSON-able
data; no torch.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session, aliased, defer

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.models import (
    Circuit,
    CircuitEdge,
    CircuitNode,
    Component,
    Edit,
    EditComponent,
    Fact,
    Model,
    Relation,
    Run,
)
from atlas.db.queries import circuit_detail
from atlas.db.recut import GraphIndex, load_scores
from atlas.db.session import transaction

COMPONENT_NAME = re.compile(r"^(a(\d+)\.h(\d+)|m(\d+))$")


def _stamp(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def page_of(items: list[dict[str, Any]], limit: int, key: str = "id") -> dict[str, Any]:
    """{items, next}: `next` is the cursor (`after`) of the following page, None on the last one."""
    return {"items": items[:limit], "next": items[limit - 1][key] if len(items) > limit else None}


# -------------------------------------------------------------------------------------- names and checks


def model_exists(target: Engine | Session, name: str) -> bool:
    with transaction(target) as session:
        return session.scalar(select(Model.id).where(Model.name == name).limit(1)) is not None


def relation_exists(target: Engine | Session, name: str) -> bool:
    with transaction(target) as session:
        return session.scalar(select(Relation.id).where(Relation.name == name)) is not None


def known_names(target: Engine | Session, what: str, limit: int = 10) -> list[str]:
    """A few catalogued model or relation names, for error messages."""
    column = Model.name if what == "model" else Relation.name
    with transaction(target) as session:
        return list(session.scalars(select(column).distinct().order_by(column).limit(limit)))


# The catalogue's version: changes whenever a circuit or a knowledge edit is stored or removed (a
# component's appearances include edits). The API's cache keys its bodies on it; `circuits` comes first.
CATALOGUE_VERSION = select(
    func.count().label("circuits"),
    func.max(Circuit.id),
    func.max(Circuit.created_at),
    select(func.count(Edit.id)).scalar_subquery(),
    select(func.max(Edit.id)).scalar_subquery(),
).select_from(Circuit)


def catalogue_version(target: Engine | Session) -> tuple[Any, ...]:
    """(circuits, largest circuit id, newest circuit, edits, largest edit id): see CATALOGUE_VERSION."""
    with transaction(target) as session:
        return tuple(session.execute(CATALOGUE_VERSION).one())


# ----------------------------------------------------------------------------------------- models, facts


def list_models(target: Engine | Session, after: int | None = None, limit: int = 50) -> dict[str, Any]:
    """Catalogued models by id, with how many circuits each has."""
    counts = (
        select(Run.model_id, func.count(Circuit.id).label("n"))
        .join(Circuit, Circuit.run_id == Run.id)
        .group_by(Run.model_id)
        .subquery()
    )
    query = (
        select(Model, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.model_id == Model.id)
        .order_by(Model.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Model.id > after)
    with transaction(target) as session:
        items = [
            {
                "id": m.id,
                "name": m.name,
                "architecture": m.architecture,
                "n_layers": m.n_layers,
                "n_heads": m.n_heads,
                "d_model": m.d_model,
                "dtype": m.dtype,
                "weights_sha256": m.weights_sha256,
                "n_circuits": int(n),
                "created_at": _stamp(m.created_at),
            }
            for m, n in session.execute(query)
        ]
    return page_of(items, limit)


def _relation_view(relation: Relation, n_facts: int, n_circuits: int) -> dict[str, Any]:
    return {
        "id": relation.id,
        "name": relation.name,
        "title": relation.title,
        "category": relation.category,
        "domain": relation.domain,
        "range": relation.range,
        "symmetric": relation.symmetric,
        "prompt_templates": list(relation.prompt_templates),
        "prompt_templates_zs": list(relation.prompt_templates_zs),
        "content_sha256": relation.content_sha256,
        "n_facts": int(n_facts),
        "n_circuits": int(n_circuits),
    }


def _relations_query() -> Any:
    facts = select(Fact.relation_id, func.count().label("n")).group_by(Fact.relation_id).subquery()
    circuits = (
        select(Run.relation_id, func.count(Circuit.id).label("n"))
        .join(Circuit, Circuit.run_id == Run.id)
        .group_by(Run.relation_id)
        .subquery()
    )
    return (
        select(Relation, func.coalesce(facts.c.n, 0), func.coalesce(circuits.c.n, 0))
        .outerjoin(facts, facts.c.relation_id == Relation.id)
        .outerjoin(circuits, circuits.c.relation_id == Relation.id)
    )


def list_relations(
    target: Engine | Session, category: str | None = None, after: int | None = None, limit: int = 50
) -> dict[str, Any]:
    """Catalogued relations by id, with their category, fact count and circuit count."""
    query = _relations_query().order_by(Relation.id).limit(limit + 1)
    if category is not None:
        query = query.where(Relation.category == category)
    if after is not None:
        query = query.where(Relation.id > after)
    with transaction(target) as session:
        items = [_relation_view(*row) for row in session.execute(query)]
    return page_of(items, limit)


def get_relation(target: Engine | Session, name: str) -> dict[str, Any]:
    with transaction(target) as session:
        row = session.execute(_relations_query().where(Relation.name == name)).one_or_none()
        if row is None:
            raise NotCatalogued(f"unknown relation {name!r}: import it first (`atlas corpus import PATH`)")
        return _relation_view(*row)


def list_facts(
    target: Engine | Session, relation: str, after: int | None = None, limit: int = 50
) -> dict[str, Any]:
    """A relation's facts by id."""
    query = (
        select(Fact.id, Fact.subject, Fact.object)
        .join(Relation, Fact.relation_id == Relation.id)
        .where(Relation.name == relation)
        .order_by(Fact.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Fact.id > after)
    with transaction(target) as session:
        if session.scalar(select(Relation.id).where(Relation.name == relation)) is None:
            raise NotCatalogued(
                f"unknown relation {relation!r}: import it first (`atlas corpus import PATH`)"
            )
        items = [
            {"id": i, "relation": relation, "subject": s, "object": o} for i, s, o in session.execute(query)
        ]
    return page_of(items, limit)


# ------------------------------------------------------------------------------------------- one circuit


def circuit_full(target: Engine | Session, circuit_id: int) -> dict[str, Any]:
    """atlas.db.queries.circuit_detail plus what it takes to reproduce the run: the model's architecture,
    shape, dtype and weights hash, the relation's content hash, every run parameter and the run's timings."""
    detail = circuit_detail(target, circuit_id)
    with transaction(target) as session:
        run, model, relation, circuit = session.execute(
            select(Run, Model, Relation, Circuit)
            .options(
                defer(Circuit.scores),
                defer(Circuit.node_set),
                defer(Circuit.edge_set),
                defer(Circuit.null_inclusion),
                defer(Circuit.member_stability),
                defer(Circuit.member_roles),
            )
            .join(Model, Run.model_id == Model.id)
            .join(Relation, Run.relation_id == Relation.id)
            .join(Circuit, Circuit.run_id == Run.id)
            .where(Circuit.id == circuit_id)
        ).one()
        detail["run"].update(
            {
                "method": run.method,
                "ig_steps": run.ig_steps,
                "metric": run.metric,
                "level": run.level,
                "selection": run.selection,
                "top_n": run.top_n,
                "threshold": run.threshold,
                "batch_size": run.batch_size,
                "unpaired_facts": run.unpaired_facts,
                "started_at": _stamp(run.started_at),
                "finished_at": _stamp(run.finished_at),
            }
        )
        detail["n_random_edges"] = circuit.n_random_edges
        detail["reproducibility"] = {
            "model": {
                "name": model.name,
                "architecture": model.architecture,
                "n_layers": model.n_layers,
                "n_heads": model.n_heads,
                "d_model": model.d_model,
                "dtype": model.dtype,
                "weights_sha256": model.weights_sha256,
            },
            "relation": {"name": relation.name, "content_sha256": relation.content_sha256},
            "corpus_hash": run.corpus_hash,
            "code_version": run.code_version,
            "seed": run.seed,
            "template": run.template,
            "score_matrix": {
                "layout": circuit.layout,
                "rows": circuit.score_rows,
                "cols": circuit.score_cols,
                "dtype": circuit.score_dtype,
            },
        }
    return detail


def _members(session: Session, circuit_id: int) -> tuple[dict[str, float | None], set[str]]:
    """The circuit's nodes (name -> stored score) and its edges' names."""
    nodes = dict(
        session.execute(
            select(Component.name, CircuitNode.score)
            .join(Component, CircuitNode.component_id == Component.id)
            .where(CircuitNode.circuit_id == circuit_id, CircuitNode.in_circuit)
        )
        .tuples()
        .all()
    )
    writer, reader = aliased(Component), aliased(Component)
    edges = {
        f"{w}->{r}<{port}>" if port else f"{w}->{r}"
        for w, r, port in session.execute(
            select(writer.name, reader.name, CircuitEdge.port)
            .join(writer, CircuitEdge.writer_id == writer.id)
            .join(reader, CircuitEdge.reader_id == reader.id)
            .where(CircuitEdge.circuit_id == circuit_id, CircuitEdge.in_circuit)
        )
    }
    return nodes, edges


def eap_graph_json(target: Engine | Session, circuit_id: int) -> dict[str, Any]:
    """The circuit as EAP-IG's `Graph.to_json` writes a graph (and `Graph.from_json` reads it): `cfg`
    (n_layers, n_heads, parallel_attn_mlp, d_model), `nodes` {name: {in_graph[, score]}} and `edges` {name:
    {score, in_graph}} over every edge of the model's graph, scores from the stored score matrix. Node
    scores are written for node-level circuits only (EAP-IG writes them only when it scored nodes)."""
    stored = load_scores(target, circuit_id)
    with transaction(target) as session:
        nodes_in, edges_in = _members(session, circuit_id)
    graph: GraphIndex = stored.graph
    node_level = stored.level != "edge"
    nodes: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(graph.node_names):
        entry: dict[str, Any] = {"in_graph": name in nodes_in or name == "logits"}
        if node_level and i < graph.n_writers:
            entry["score"] = float(stored.scores[i])
        nodes[name] = entry
    edges: dict[str, dict[str, Any]] = {}
    writers, readers = np.nonzero(graph.valid)
    values = (
        stored.scores[writers, readers].astype(np.float64).tolist()
        if not node_level
        else [0.0] * len(writers)
    )
    for w, r, score in zip(writers.tolist(), readers.tolist(), values, strict=True):
        name = graph.edge_name(w, r)
        edges[name] = {"score": score, "in_graph": name in edges_in}
    return {
        "cfg": {
            "n_layers": graph.n_layers,
            "n_heads": graph.n_heads,
            "parallel_attn_mlp": False,
            "d_model": stored.d_model,
        },
        "nodes": nodes,
        "edges": edges,
    }


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


NODE_COLORS = {"input": "#d9d9d9", "head": "#cfe2ff", "mlp": "#ffe0b3", "logits": "#c7f0c7"}


def circuit_dot(target: Engine | Session, circuit_id: int) -> str:
    """The circuit as a Graphviz digraph: heads blue, MLPs orange, input and logits grey and green, one row
    per layer; edges blue for positive and red for negative scores, width by |score|, q/k/v on the label."""
    detail = circuit_detail(target, circuit_id)
    title = (
        f"circuit {circuit_id}: {detail['model']} / {detail['relation']} ({detail['method']}), "
        f"{detail['n_nodes']} nodes, {detail['n_edges']} edges"
    )
    lines = [
        f"digraph circuit_{circuit_id} {{",
        f"  graph [rankdir=BT, labelloc=t, label={_dot_quote(title)}, fontname=Helvetica];",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica];',
        "  edge [arrowsize=0.5];",
    ]
    layers: dict[int, list[str]] = defaultdict(list)
    for entry in detail["nodes"]:
        name = entry["node"]
        match = COMPONENT_NAME.match(name)
        kind = name if name in ("input", "logits") else ("head" if match and match.group(2) else "mlp")
        layer = int((match.group(2) or match.group(4)) if match else 0)
        lines.append(f"  {_dot_quote(name)} [fillcolor={_dot_quote(NODE_COLORS[kind])}];")
        if match:
            layers[layer].append(name)
    for layer in sorted(layers):
        lines.append("  { rank=same; " + " ".join(_dot_quote(n) for n in layers[layer]) + " }")
    scores = [
        abs(e["score"]) for e in detail["edges"] if e["score"] is not None and math.isfinite(e["score"])
    ]
    top = max(scores, default=0.0) or 1.0
    for entry in detail["edges"]:
        writer, _, reader = entry["edge"].partition("->")
        node, _, port = reader.partition("<")
        score = entry["score"]
        attributes = []
        if port:
            attributes.append(f"label={_dot_quote(port.rstrip('>'))}")
        if score is not None and math.isfinite(score):
            attributes.append(f"penwidth={0.5 + 4.5 * abs(score) / top:.2f}")
            attributes.append(f"color={_dot_quote('#1f5fbf' if score >= 0 else '#c0392b')}")
            attributes.append(f"tooltip={_dot_quote(f'{score:.4g}')}")
        lines.append(f"  {_dot_quote(writer)} -> {_dot_quote(node)} [{', '.join(attributes)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- one component


def component_appearances(
    target: Engine | Session,
    name: str,
    model: str | None = None,
    category: str | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Where one head or MLP (`a3.h1`, `m5`) sits in catalogued circuits: per model (with its relative
    depth), the relations whose circuits contain it and those circuits (id, method, the node's score); and
    the knowledge edits whose edited fact's circuit gained, lost or kept it (with its score before and
    after)."""
    match = COMPONENT_NAME.match(name)
    if match is None:
        raise CatalogueError(
            f"component must be a head 'a<layer>.h<head>' or an MLP 'm<layer>', got {name!r}"
        )
    layer = int(match.group(2) if match.group(2) is not None else match.group(4))
    query = (
        select(
            Model.name,
            Model.n_layers,
            Relation.name,
            Relation.category,
            Circuit.id,
            Run.method,
            CircuitNode.score,
        )
        .select_from(Component)
        .join(Model, Component.model_id == Model.id)
        .join(CircuitNode, and_(CircuitNode.component_id == Component.id, CircuitNode.in_circuit))
        .join(Circuit, CircuitNode.circuit_id == Circuit.id)
        .join(Run, Circuit.run_id == Run.id)
        .join(Relation, Run.relation_id == Relation.id)
        .where(Component.name == name)
        .order_by(Model.name, Relation.name, Circuit.id)
    )
    exists = select(Model.name).join(Component, Component.model_id == Model.id).where(Component.name == name)
    if model is not None:
        query = query.where(Model.name == model)
        exists = exists.where(Model.name == model)
    if category is not None:
        query = query.where(Relation.category == category)
    if method is not None:
        query = query.where(Run.method == method)
    with transaction(target) as session:
        if session.scalar(exists.limit(1)) is None:
            where = f"model {model!r}" if model is not None else "any catalogued model"
            raise NotCatalogued(f"unknown component {name!r}: {where} has no such head or MLP")
        rows = session.execute(query).all()
        edits_query = (
            select(
                Edit.id,
                Model.name,
                Relation.name,
                Edit.subject,
                Edit.old_object,
                Edit.new_object,
                Edit.method,
                Edit.layer,
                EditComponent.change,
                EditComponent.score_before,
                EditComponent.score_after,
            )
            .select_from(EditComponent)
            .join(Component, EditComponent.component_id == Component.id)
            .join(Edit, EditComponent.edit_id == Edit.id)
            .join(Model, Edit.model_id == Model.id)
            .join(Relation, Edit.relation_id == Relation.id)
            .where(Component.name == name)
            .order_by(Edit.id)
        )
        if model is not None:
            edits_query = edits_query.where(Model.name == model)
        if category is not None:
            edits_query = edits_query.where(Relation.category == category)
        edit_rows = session.execute(edits_query).all()
    models: dict[str, dict[str, Any]] = {}
    for model_name, n_layers, relation, rel_category, circuit_id, run_method, score in rows:
        entry = models.setdefault(
            model_name,
            {
                "model": model_name,
                "n_layers": n_layers,
                "relative_depth": (layer + 0.5) / n_layers,
                "n_circuits": 0,
                "relations": {},
            },
        )
        entry["n_circuits"] += 1
        relation_entry = entry["relations"].setdefault(
            relation, {"relation": relation, "category": rel_category, "circuits": []}
        )
        relation_entry["circuits"].append({"id": circuit_id, "method": run_method, "score": score})
    relations = sorted({r for m in models.values() for r in m["relations"]})
    return {
        "component": name,
        "kind": "head" if match.group(2) is not None else "mlp",
        "layer": layer,
        "head": int(match.group(3)) if match.group(3) is not None else None,
        "n_models": len(models),
        "n_relations": len(relations),
        "n_circuits": sum(m["n_circuits"] for m in models.values()),
        "relations": relations,
        "models": [
            {**m, "n_relations": len(m["relations"]), "relations": list(m["relations"].values())}
            for m in models.values()
        ],
        "edits": [
            {
                "id": edit_id,
                "model": model_name,
                "relation": relation,
                "subject": subject,
                "old_object": old,
                "new_object": new,
                "method": edit_method,
                "layer": layer_edited,
                "change": change,
                "score_before": before,
                "score_after": after,
            }
            for (
                edit_id,
                model_name,
                relation,
                subject,
                old,
                new,
                edit_method,
                layer_edited,
                change,
                before,
                after,
            ) in edit_rows
        ],
    }
