"""Writes to the catalogue: relations and their facts, and discovery results as runs with their circuits.

One transaction per circuit: a reader sees a circuit whole or not at all. Writes are idempotent on the run's
parameters: storing the same run again (a retry, or a second worker that lost the race) returns the circuit
already there and leaves exactly one copy. Bad input raises `CatalogueError` and stores nothing.

Edges are bulk-loaded with PostgreSQL's COPY (psycopg 3 `cursor.copy`), with executemany elsewhere.
Each circuit's record (the JSON body of GET /circuits/{id}, atlas.db.records) is written in the same
transaction. Sessions come from atlas.db.session.transaction (also importable from here).
torch is imported only by the functions that take or return tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, Table, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atlas.db import CatalogueConflict, CatalogueError, NotCatalogued, records
from atlas.db.models import (
    MEMBER_DTYPE,
    MEMBER_ROLE_DTYPE,
    MEMBER_STABILITY_DTYPE,
    ROLES,
    SCORE_DTYPE,
    Circuit,
    CircuitEdge,
    CircuitNode,
    Component,
    Evaluation,
    Fact,
    HeadRole,
    Model,
    Relation,
    Run,
)
from atlas.db.session import transaction
from atlas.spec.corpus import Fact as CorpusFact
from atlas.spec.corpus import Relation as CorpusRelation
from atlas.spec.corpus import corpus_hash as relations_hash
from atlas.spec.json_safe import finite
from atlas.spec.params import DiscoveryParams, params_key, template_key
from atlas.spec.recurrence import NULL_DTYPE, NULL_SAMPLES, inclusion_probabilities

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import NDArray

    from atlas.core.circuit import Circuit as CoreCircuit
    from atlas.core.discover import DiscoveryResult
    from atlas.core.evaluation import SplitEvaluation
    from atlas.core.graph import Graph
    from atlas.core.models import LoadedModel

RELATION_FIELDS = (
    "title",
    "category",
    "domain",
    "range",
    "symmetric",
    "prompt_templates",
    "prompt_templates_zs",
)
EDGE_COLUMNS = ("circuit_id", "writer_id", "reader_id", "port", "score", "in_circuit", "stability")


@dataclass(frozen=True)
class ModelInfo:
    """What the catalogue records about a model (its natural key, and d_model)."""

    name: str
    architecture: str
    n_layers: int
    n_heads: int
    d_model: int
    dtype: str
    weights_sha256: str
    edge_level: bool = True  # not stored: only used to resolve DiscoveryParams.level=None

    @classmethod
    def of(cls, model: LoadedModel) -> ModelInfo:
        return cls(
            name=model.name,
            architecture=model.architecture,
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            d_model=model.d_model,
            dtype=model.dtype,
            weights_sha256=model.weights_sha256,
            edge_level=model.edge_level,
        )


# ----------------------------------------------------------------------------------------- relations, facts


def relation_record(relation: CorpusRelation) -> dict[str, Any]:
    return {
        "name": relation.name,
        "title": relation.title,
        "category": relation.category,
        "domain": relation.domain,
        "range": relation.range,
        "symmetric": relation.symmetric,
        "prompt_templates": list(relation.prompt_templates),
        "prompt_templates_zs": list(relation.prompt_templates_zs),
        "content_sha256": relations_hash([relation]),
        "source": str(relation.source),
    }


def ensure_relation(session: Session, relation: CorpusRelation) -> tuple[Relation, bool]:
    """The relation's row, inserted with its facts if new (True). A stored relation of the same name with
    other content is an error: relations are immutable once circuits refer to them."""
    record = relation_record(relation)
    row = session.scalars(select(Relation).where(Relation.name == relation.name)).one_or_none()
    if row is not None:
        if row.content_sha256 != record["content_sha256"]:
            differ = [key for key in RELATION_FIELDS if getattr(row, key) != record[key]]
            stored_facts = set(
                session.execute(select(Fact.subject, Fact.object).where(Fact.relation_id == row.id))
                .tuples()
                .all()
            )
            if stored_facts != {(f.subject, f.object) for f in relation.facts}:
                differ.append("facts")
            raise CatalogueConflict(
                f"relation {relation.name!r} is already catalogued with other content "
                f"(differs in {', '.join(differ) or 'content'}); rename the relation to store it"
            )
        return row, False
    row = Relation(**record)
    session.add(row)
    session.flush()
    _insert_facts(session, row.id, relation.facts)
    return row, True


def _insert_facts(session: Session, relation_id: int, facts: Iterable[CorpusFact]) -> int:
    rows = [
        {"relation_id": relation_id, "subject": f.subject, "object": f.object} for f in dict.fromkeys(facts)
    ]
    if rows:
        session.execute(insert(Fact), rows)
    return len(rows)


def import_relations(target: Engine | Session, relations: Iterable[CorpusRelation]) -> dict[str, int]:
    """Store relations and their facts in one transaction: {"added", "unchanged", "facts"} counts. A relation
    already stored with other content raises CatalogueError and nothing is stored."""
    counts = {"added": 0, "unchanged": 0, "facts": 0}
    relations = list(relations)
    names = [r.name for r in relations]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise CatalogueError(f"relations given twice: {', '.join(dupes)}")
    with transaction(target, write=True) as session:
        for relation in relations:
            _, added = ensure_relation(session, relation)
            counts["added" if added else "unchanged"] += 1
            counts["facts"] += len(set(relation.facts)) if added else 0
    return counts


def add_facts(target: Engine | Session, relation_name: str, facts: Iterable[CorpusFact]) -> int:
    """Add facts to a stored relation (ones already there are skipped); how many were added."""
    with transaction(target, write=True) as session:
        relation_id = session.scalar(select(Relation.id).where(Relation.name == relation_name))
        if relation_id is None:
            raise NotCatalogued(f"unknown relation {relation_name!r}: import the relation before its facts")
        stored = set(
            session.execute(select(Fact.subject, Fact.object).where(Fact.relation_id == relation_id))
        )
        new = [f for f in dict.fromkeys(facts) if (f.subject, f.object) not in stored]
        count = _insert_facts(session, relation_id, new)
        if count:
            # The relation's content changed: keep its hash honest.
            row = session.get_one(Relation, relation_id)
            every = (
                session.execute(
                    select(Fact.subject, Fact.object).where(Fact.relation_id == relation_id).order_by(Fact.id)
                )
                .tuples()
                .all()
            )
            row.content_sha256 = relations_hash(
                [_corpus_relation(row, tuple(CorpusFact(s, o) for s, o in every))]
            )
            records.rewrite_relation(session, relation_id)  # they show the relation's hash
        return count


def load_relation(target: Engine | Session, name: str) -> CorpusRelation:
    """A catalogued relation with its facts (in insertion order), as the corpus reader would give it."""
    with transaction(target) as session:
        row = session.scalars(select(Relation).where(Relation.name == name)).one_or_none()
        if row is None:
            raise NotCatalogued(f"unknown relation {name!r}: import it first (`atlas corpus import PATH`)")
        facts = session.execute(
            select(Fact.subject, Fact.object).where(Fact.relation_id == row.id).order_by(Fact.id)
        ).all()
        return _corpus_relation(row, tuple(CorpusFact(s, o) for s, o in facts))


def _corpus_relation(row: Relation, facts: tuple[CorpusFact, ...]) -> CorpusRelation:
    return CorpusRelation(
        name=row.name,
        title=row.title,
        category=row.category,
        domain=row.domain,
        range=row.range,
        symmetric=row.symmetric,
        prompt_templates=tuple(row.prompt_templates),
        prompt_templates_zs=tuple(row.prompt_templates_zs),
        facts=facts,
        source=row.source,
    )


# ----------------------------------------------------------------------------------------- models, components


def component_rows(n_layers: int, n_heads: int) -> list[dict[str, Any]]:
    """The nodes of a model's graph, in graph order: input, a{L}.h{H} and m{L} per layer, logits."""
    rows: list[dict[str, Any]] = [{"name": "input", "kind": "input", "layer": None, "head": None}]
    for layer in range(n_layers):
        rows += [
            {"name": f"a{layer}.h{head}", "kind": "head", "layer": layer, "head": head}
            for head in range(n_heads)
        ]
        rows.append({"name": f"m{layer}", "kind": "mlp", "layer": layer, "head": None})
    rows.append({"name": "logits", "kind": "logits", "layer": None, "head": None})
    return rows


def _model_key(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "architecture": info.architecture,
        "n_layers": info.n_layers,
        "n_heads": info.n_heads,
        "dtype": info.dtype,
        "weights_sha256": info.weights_sha256,
    }


def find_model(session: Session, model: LoadedModel | ModelInfo | str) -> Model | None:
    if isinstance(model, str):
        rows = session.scalars(select(Model).where(Model.name == model)).all()
        if len(rows) > 1:
            raise CatalogueError(
                f"model name {model!r} is ambiguous: {len(rows)} catalogued models (different weights or "
                "dtype) carry it; pass the loaded model"
            )
        return rows[0] if rows else None
    info = model if isinstance(model, ModelInfo) else ModelInfo.of(model)
    key = _model_key(info)
    return session.scalars(select(Model).filter_by(**key)).one_or_none()


def register_model(target: Engine | Session, model: LoadedModel | ModelInfo) -> int:
    """The model's id, inserting it and its components if new."""
    with transaction(target, write=True) as session:
        return _ensure_model(session, model if isinstance(model, ModelInfo) else ModelInfo.of(model)).id


def _ensure_model(session: Session, info: ModelInfo) -> Model:
    row = find_model(session, info)
    if row is None:
        row = Model(**_model_key(info), d_model=info.d_model)
        session.add(row)
        session.flush()
        session.execute(
            insert(Component),
            [{"model_id": row.id, **c} for c in component_rows(info.n_layers, info.n_heads)],
        )
    return row


def resolve_model(session: Session, model: LoadedModel | ModelInfo | str) -> Model:
    if isinstance(model, str):
        row = find_model(session, model)
        if row is None:
            raise NotCatalogued(
                f"unknown model {model!r}: no catalogued model has that name; store a circuit with the "
                "loaded model (or register_model) first"
            )
        return row
    return _ensure_model(session, model if isinstance(model, ModelInfo) else ModelInfo.of(model))


# ---------------------------------------------------------------------------------------------------- runs


@lru_cache(maxsize=1)
def default_code_version() -> str:
    """The package's version, plus the git commit when it runs from a checkout: part of a run's key, so
    results of other code are not reused. (Uncommitted changes are not seen.)"""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        release = version("circuit-atlas")
    except PackageNotFoundError:
        release = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return release
    return f"{release}+g{commit}" if commit else release


def run_key(params: DiscoveryParams, level: str) -> dict[str, Any]:
    """The run's key and filter columns: `params` (canonical), `params_key` (their hash) and the columns users
    filter on, normalized (no NULLs)."""
    canonical = params.canonical(level)
    selection = params.selection
    return {
        "params": canonical,
        "params_key": params_key(canonical),
        "method": params.method,
        "ig_steps": params.steps,
        "metric": params.metric,
        "level": level,
        "selection": selection,
        "top_n": params.top_n if selection == "top_n" and params.top_n is not None else 0,
        "threshold": float(params.threshold)
        if selection == "threshold" and params.threshold is not None
        else 0.0,
        "ablation": params.ablation,
        "template": template_key(params.template),
        "seed": params.seed,
        "max_facts": params.max_facts,
        "heldout_fraction": float(params.heldout_fraction),
        "known_only": params.known_only,
        "curve": params.curve,
    }


KEY_COLUMNS = ("params_key", "corpus_hash", "code_version")


def _find_run(session: Session, model_id: int, relation_id: int, key: dict[str, Any]) -> Run | None:
    unique = {column: key[column] for column in KEY_COLUMNS}
    return session.scalars(
        select(Run).filter_by(model_id=model_id, relation_id=relation_id, **unique).with_for_update()
    ).one_or_none()


def _level_of(model: LoadedModel | ModelInfo | str, params: DiscoveryParams) -> str:
    if params.level is not None:
        return params.level
    if isinstance(model, str):
        return "edge"
    return "edge" if model.edge_level else "node"


def find_circuit(
    target: Engine | Session,
    model: LoadedModel | ModelInfo | str,
    relation_name: str,
    params: DiscoveryParams,
    corpus_hash: str,
    code_version: str,
) -> int | None:
    """The id of the stored circuit of this exact run, if any: look before running. With a model given by
    name and `params.level` None, the edge-level run is looked up (pass the level for node-level models)."""
    key = {
        **run_key(params, _level_of(model, params)),
        "corpus_hash": corpus_hash,
        "code_version": code_version,
    }
    with transaction(target) as session:
        model_row = find_model(session, model)
        relation_id = session.scalar(select(Relation.id).where(Relation.name == relation_name))
        if model_row is None or relation_id is None:
            return None
        conditions = [getattr(Run, column) == key[column] for column in KEY_COLUMNS]
        return session.scalar(
            select(Circuit.id)
            .join(Run, Circuit.run_id == Run.id)
            .where(Run.model_id == model_row.id, Run.relation_id == relation_id, *conditions)
        )


def record_failure(
    target: Engine | Session,
    model: LoadedModel | ModelInfo | str,
    relation: CorpusRelation,
    params: DiscoveryParams,
    corpus_hash: str,
    code_version: str,
    error: str,
) -> int:
    """Record a failed run (status "failed", the error's message); its id. A later successful store of the
    same run takes this row over."""
    with transaction(target, write=True) as session:
        model_row = resolve_model(session, model)
        relation_row, _ = ensure_relation(session, relation)
        key = {
            **run_key(params, _level_of(model, params)),
            "corpus_hash": corpus_hash,
            "code_version": code_version,
        }
        run = _find_run(session, model_row.id, relation_row.id, key)
        if run is None:
            run = Run(model_id=model_row.id, relation_id=relation_row.id, **key, batch_size=params.batch_size)
            session.add(run)
        if run.circuit is not None:
            raise CatalogueConflict(f"run {run.id} already has circuit {run.circuit.id}; it did not fail")
        run.status, run.error, run.finished_at = "failed", error, datetime.now(UTC)
        session.flush()
        return run.id


# ------------------------------------------------------------------------------------------------ circuits


def store_discovery(
    target: Engine | Session,
    result: DiscoveryResult,
    model: LoadedModel | ModelInfo | str,
    relation: CorpusRelation,
    corpus_hash: str,
    code_version: str,
) -> int:
    """Store a discovery result (run, circuit, nodes, edges, score matrix, evaluations) in one transaction;
    the circuit's id. The same run stored again returns the existing circuit's id and writes nothing.
    `model` is the loaded model (or its ModelInfo), or the name of a model already catalogued."""
    for attempt in range(3):
        try:
            with transaction(target, write=True) as session:
                return _store(session, result, model, relation, corpus_hash, code_version)
        except IntegrityError:
            # A concurrent writer stored the same run first (return its circuit), or the same model or
            # relation (try again: they are there now).
            existing = find_circuit(target, model, relation.name, result.params, corpus_hash, code_version)
            if existing is not None:
                return existing
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _check_result(result: DiscoveryResult, model_row: Model, relation: CorpusRelation) -> None:
    if result.model != model_row.name:
        raise CatalogueError(f"the circuit is of model {result.model!r}, not of {model_row.name!r}")
    if result.relation != relation.name:
        raise CatalogueError(f"the circuit is of relation {result.relation!r}, not of {relation.name!r}")
    graph = result.circuit.graph
    if (graph.n_layers, graph.n_heads) != (model_row.n_layers, model_row.n_heads):
        raise CatalogueError(
            f"the circuit's graph has {graph.n_layers} layers and {graph.n_heads} heads; model "
            f"{model_row.name!r} has {model_row.n_layers} and {model_row.n_heads}"
        )
    level = result.circuit.level
    expected = (graph.n_writers, graph.n_readers) if level == "edge" else (graph.n_writers,)
    shape = tuple(result.scores.shape)
    if shape != expected:
        raise CatalogueError(
            f"score matrix has shape {list(shape)}; {level}-level scores of a {graph.n_layers}-layer, "
            f"{graph.n_heads}-head model have shape {list(expected)}"
        )
    for name, mask in (("circuit", result.circuit.edges), ("random circuit", result.random.edges)):
        if tuple(mask.shape) != (graph.n_writers, graph.n_readers):
            raise CatalogueError(
                f"{name} edge mask has shape {list(mask.shape)}, not {[graph.n_writers, graph.n_readers]}"
            )
    if not bool(result.scores.isfinite().all()):
        raise CatalogueError("score matrix has non-finite values")
    stability = result.stability
    if stability is not None and (
        stability.edges.shape != (graph.n_writers, graph.n_readers)
        or stability.nodes.shape != (graph.n_writers,)
    ):
        raise CatalogueError(
            f"stability has shapes {list(stability.edges.shape)} and {list(stability.nodes.shape)}, not the "
            f"graph's {[graph.n_writers, graph.n_readers]} and {[graph.n_writers]}"
        )


def _store(
    session: Session,
    result: DiscoveryResult,
    model: LoadedModel | ModelInfo | str,
    relation: CorpusRelation,
    corpus_hash: str,
    code_version: str,
) -> int:
    model_row = resolve_model(session, model)
    _check_result(result, model_row, relation)
    relation_row, _ = ensure_relation(session, relation)
    circuit = result.circuit
    key = {**run_key(result.params, circuit.level), "corpus_hash": corpus_hash, "code_version": code_version}
    run = _find_run(session, model_row.id, relation_row.id, key)
    if run is not None and run.circuit is not None:
        return run.circuit.id
    now = datetime.now(UTC)
    if run is None:
        run = Run(
            model_id=model_row.id, relation_id=relation_row.id, **key, batch_size=result.params.batch_size
        )
        session.add(run)
    run.status, run.error, run.finished_at = "done", None, now
    run.facts = asdict(result.counts)
    run.unpaired_facts = list(result.unpaired_facts)
    run.seconds = dict(result.seconds)
    run.started_at = run.started_at or datetime.fromtimestamp(
        now.timestamp() - sum(result.seconds.values()), UTC
    )
    session.flush()

    graph = circuit.graph
    values, layout = pack_scores(graph, result.scores, circuit.level)
    row = Circuit(
        run_id=run.id,
        level=circuit.level,
        n_nodes=circuit.n_nodes,
        n_edges=circuit.n_edges,
        n_random_edges=result.random.n_edges,
        layout=layout,
        score_rows=graph.n_writers,
        score_cols=graph.n_readers if layout == "valid_edges" else 0,
        score_dtype=SCORE_DTYPE,
        scores=values,
        **member_sets(graph, circuit),
        roles=_roles_summary(result),
        target_met=result.target_met,
        search=None if result.size is None else finite(asdict(result.size)),
        template=None if result.template is None else asdict(result.template),
        stability=None if result.stability is None else result.stability.summary(),
        **null_columns(graph, circuit),
        **member_annotations(graph, circuit, result),
    )
    session.add(row)
    session.flush()
    components = dict(
        session.execute(select(Component.name, Component.id).where(Component.model_id == model_row.id))
        .tuples()
        .all()
    )
    session.execute(insert(CircuitNode), _node_rows(row.id, graph, circuit, result, components))
    _copy_edges(session, _edge_rows(row.id, graph, circuit, result, components))
    in_circuit = set(circuit.nodes)
    heads = [head for head in (result.roles.heads if result.roles else []) if head.name in in_circuit]
    if heads:
        session.execute(
            insert(HeadRole),
            [
                {
                    "circuit_id": row.id,
                    "component_id": components[head.name],
                    "role": head.role,
                    "subject_attention": head.subject_attention,
                    "relation_attention": head.relation_attention,
                    "object_rank": None,
                }
                for head in heads
            ],
        )
    for split, evaluation in (("discovery", result.discovery), ("heldout", result.heldout)):
        if evaluation is not None:
            session.add(_evaluation(row.id, split, evaluation, result if split == "discovery" else None))
    circuit_id = row.id
    records.write(session, [circuit_id])  # the API's answer for it, in this transaction
    return circuit_id


def null_columns(graph: Graph, circuit: CoreCircuit) -> dict[str, Any]:
    """`Circuit.null_inclusion` and `null_samples`: each writer's chance to be a component of a random
    circuit with as many heads and MLPs as this one (atlas.spec.recurrence), seeded by that number so equal
    sizes agree."""
    import numpy as np

    size = circuit.n_components
    values = inclusion_probabilities(graph, circuit.level, size, NULL_SAMPLES, seed=size)
    return {
        "null_inclusion": np.ascontiguousarray(values, dtype=NULL_DTYPE).tobytes(),
        "null_samples": NULL_SAMPLES if circuit.level == "edge" else 0,
    }


def member_annotations(graph: Graph, circuit: CoreCircuit, result: DiscoveryResult) -> dict[str, bytes]:
    """`Circuit.member_stability` and `member_roles`: per entry of `member_sets`' node_set (the heads and MLPs
    in writer order), the bootstrap stability (float32, NaN without a bootstrap) and the head's role (int8
    index into ROLES, -1 for an MLP or a head without a role)."""
    import numpy as np

    writer = {name: i for i, name in enumerate(graph.writer_names)}
    nodes = sorted(writer[name] for name in set(circuit.nodes) if name in writer and name != "input")
    if result.stability is not None:
        stability = result.stability.nodes[np.asarray(nodes, dtype=np.int64)]
    else:
        stability = np.full(len(nodes), np.nan)
    role_of = {head.name: ROLES.index(head.role) for head in (result.roles.heads if result.roles else [])}
    roles = [role_of.get(graph.writer_names[w], -1) for w in nodes]
    return {
        "member_stability": np.asarray(stability, dtype=MEMBER_STABILITY_DTYPE).tobytes(),
        "member_roles": np.asarray(roles, dtype=MEMBER_ROLE_DTYPE).tobytes(),
    }


def _roles_summary(result: DiscoveryResult) -> dict[str, Any] | None:
    """`Circuit.roles`: the thresholds the heads' roles were found with, the prompts, the counts per role."""
    if result.roles is None:
        return None
    roles = result.roles
    return {"thresholds": asdict(roles.thresholds), "n_prompts": roles.n_prompts, "counts": roles.counts()}


def pack_scores(graph: Graph, scores: torch.Tensor, level: str) -> tuple[bytes, str]:
    """The score matrix as bytes: float32 values at the valid edges (row-major), or the node scores."""
    import numpy as np

    scores = scores.detach().cpu().float()
    if level == "edge":
        values = scores[graph.valid_edges]
        layout = "valid_edges"
    else:
        values, layout = scores, "nodes"
    return np.ascontiguousarray(values.numpy(), dtype=SCORE_DTYPE).tobytes(), layout


def member_sets(graph: Graph, circuit: CoreCircuit) -> dict[str, bytes]:
    """`Circuit.node_set` and `edge_set`: the writer indices of the circuit's heads and MLPs and the flat
    indices (writer * n_readers + reader) of its edges, sorted, as little-endian int32 (what its in-circuit
    node and edge rows hold, in the graph's index spaces)."""
    import numpy as np

    if graph.n_writers * graph.n_readers > 2**31:
        raise CatalogueError(f"a {graph.n_layers}x{graph.n_heads} graph's edges overflow int32 indices")
    writer = {name: i for i, name in enumerate(graph.writer_names)}
    nodes = sorted(writer[name] for name in set(circuit.nodes) if name in writer and name != "input")
    edges = circuit.edges.detach().cpu().flatten().nonzero().flatten().numpy()  # row-major: sorted
    return {
        "node_set": np.asarray(nodes, dtype=MEMBER_DTYPE).tobytes(),
        "edge_set": np.asarray(edges, dtype=MEMBER_DTYPE).tobytes(),
    }


def node_scores(graph: Graph, scores: torch.Tensor, level: str) -> list[float | None]:
    """Per node in graph order: node scores as they are, or for edge scores the sum over a writer's outgoing
    edges (to first order, the effect of patching the node's output); None for logits."""
    scores = scores.detach().cpu().double()
    per_writer = scores if level != "edge" else (scores * graph.valid_edges).sum(1)
    return [*(float(v) for v in per_writer.tolist()), None]


def _node_rows(
    circuit_id: int, graph: Graph, circuit: CoreCircuit, result: DiscoveryResult, components: dict[str, int]
) -> list[dict[str, Any]]:
    kept = set(circuit.nodes)
    shares = [*result.stability.nodes.tolist(), 1.0] if result.stability is not None else None
    return [
        {
            "circuit_id": circuit_id,
            "component_id": components[name],
            "score": score,
            "in_circuit": name in kept,
            "stability": shares[i] if shares is not None and name in kept else None,
        }
        for i, (name, score) in enumerate(
            zip(graph.node_names, node_scores(graph, result.scores, circuit.level), strict=True)
        )
    ]


def selected_edges(
    graph: Graph, scores: torch.Tensor, params: DiscoveryParams, n_top: int | None = None
) -> NDArray[np.bool_]:
    """The edges chosen by score before pruning, as a (writers, readers) mask: the `n_top` (or the run's
    top-n) highest-|score| edges, or those over the run's threshold (atlas.spec.graph's rules)."""
    import numpy as np

    from atlas.spec import graph as index
    from atlas.spec.params import DEFAULT_TOP_N

    values = scores.detach().cpu().double().numpy()
    if n_top is None and params.threshold is not None:
        return (index.rank_values(values, params.ranking) >= params.threshold) & graph.valid
    order = index.edge_order(graph, values, params.ranking)
    return np.ascontiguousarray(index.mask_of(graph, order[: n_top or params.top_n or DEFAULT_TOP_N]))


def _split_reader(name: str) -> tuple[str, str]:
    node, _, port = name.partition("<")
    return node, port.rstrip(">")


def _edge_rows(
    circuit_id: int, graph: Graph, circuit: CoreCircuit, result: DiscoveryResult, components: dict[str, int]
) -> list[tuple[Any, ...]]:
    import numpy as np

    edges = circuit.edges.cpu()
    if circuit.level == "edge":
        n_top = result.size.n_top if result.size is not None else None
        stored = edges.numpy() | selected_edges(graph, result.scores, result.params, n_top)
        scores = result.scores.detach().cpu().double()
    else:
        stored, scores = edges.numpy(), None
    shares = result.stability.edges if result.stability is not None else None
    readers = [_split_reader(name) for name in graph.reader_names]
    rows = []
    for w, r in np.argwhere(stored).tolist():
        node, port = readers[r]
        score = float(scores[w, r]) if scores is not None else None
        member = bool(edges[w, r])
        stability = float(shares[w, r]) if shares is not None and member else None
        rows.append(
            (circuit_id, components[graph.writer_names[w]], components[node], port, score, member, stability)
        )
    return rows


def _copy_edges(session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        columns = ", ".join(EDGE_COLUMNS)
        with driver.cursor() as cursor, cursor.copy(f"COPY circuit_edges ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        # Core, not ORM, insert: the ORM splits an executemany wherever a row's None differs from the last's.
        table = cast(Table, CircuitEdge.__table__)
        session.execute(table.insert(), [dict(zip(EDGE_COLUMNS, row, strict=True)) for row in rows])


def _evaluation(
    circuit_id: int, split: str, evaluation: SplitEvaluation, result: DiscoveryResult | None
) -> Evaluation:
    curve = result.curve if result is not None else None
    return Evaluation(
        circuit_id=circuit_id,
        split=split,
        n_facts=evaluation.n_facts,
        hit_original=evaluation.hit_original,
        hit_circuit=evaluation.hit_circuit,
        hit_random=evaluation.hit_random,
        top1_original=finite(evaluation.top1_original),
        top1_circuit=finite(evaluation.top1_circuit),
        top1_random=finite(evaluation.top1_random),
        metric_full=finite(evaluation.metric_full),
        metric_empty=finite(evaluation.metric_empty),
        metric_circuit=finite(evaluation.metric_circuit),
        metric_random=finite(evaluation.metric_random),
        faithfulness=finite(evaluation.faithfulness),
        faithfulness_random=finite(evaluation.faithfulness_random),
        curve_area=finite(curve.area) if curve is not None else None,
        curve=None
        if curve is None
        else [
            {"percent": p.percent, "n_edges": p.n_edges, "faithfulness": finite(p.faithfulness)}
            for p in curve.points
        ],
    )


def count_rows(target: Engine | Session) -> dict[str, int]:
    """Rows per catalogue table (for checks that a failed write left nothing behind)."""
    from atlas.db.models import Base

    with transaction(target) as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in Base.metadata.tables.items()
        }
