"""Helpers of the API tests (fixtures are in conftest.py): a catalogue of synthetic circuits, a recording
job sender, a client factory.

The synthetic circuits are stored row by row as atlas.db.store would (run with its key, circuit with the
float32 score matrix and member sets, every node with its score, the selected edges with in-circuit flags,
evaluations, the API's record), from seeded random scores cut by the same top-n-then-prune rule, over two
small model shapes and the bundled corpus's relations: no model is loaded, so the API tests stay fast."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from services import pg_database as fresh_pg_database
from sqlalchemy import Engine, insert, select

from api.app import create_app
from api.cache import ResponseCache
from atlas.db import records
from atlas.db.models import Circuit, CircuitEdge, CircuitNode, Component, Evaluation, Relation, Run
from atlas.db.store import (
    ModelInfo,
    default_code_version,
    import_relations,
    register_model,
    run_key,
    transaction,
)
from atlas.spec.config import Settings
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.spec.graph import GraphIndex, edge_order, mask_of, top_n_edges, top_n_nodes
from atlas.spec.params import DiscoveryParams
from atlas.spec.recurrence import inclusion_probabilities

TOKEN = "test-token-0123456789"
MODELS = (
    ModelInfo("toy-a", "LlamaForCausalLM", 2, 4, 64, "float32", "a" * 64),
    ModelInfo("toy-b", "GPT2LMHeadModel", 3, 2, 32, "float32", "b" * 64),
)
RELATIONS = ("country_capital_city", "country_language", "name_gender", "adjective_antonym")
# The parameters every synthetic run was "computed" with (a job asking for them again finds the runs).
PARAMS = DiscoveryParams(method="eap-ig", ig_steps=2, top_n=30, max_facts=4, known_only=False, curve=False)


def pg_database(user: str) -> Iterator[str]:
    """A throw-away database's URL, dropped afterwards (a generator, for fixtures and `for` loops)."""
    with fresh_pg_database(user) as url:
        yield url


# ------------------------------------------------------------------------------------- synthetic circuits


def _scores(graph: GraphIndex, rng: np.random.Generator) -> np.ndarray:
    """Seeded scores with a skew (edges from early writers and into logits score higher), zero where the
    graph has no edge, as discovery's score matrices are."""
    base = rng.standard_normal((graph.n_writers, graph.n_readers)).astype(np.float32)
    skew = np.ones_like(base)
    skew[0, :] *= 2.0
    skew[:, graph.logits_reader] *= 2.0
    return np.where(graph.valid, base * skew, 0.0).astype(np.float32)


def store_synthetic(
    engine: Engine,
    info: ModelInfo,
    relation: str,
    params: DiscoveryParams,
    seed: int,
    level: str = "edge",
    target_met: bool | None = None,
    planted: str | None = None,
) -> int:
    """One circuit stored as store_discovery would store it; its id. `planted`: a head whose input -> head
    (q) -> logits path outscores every other edge, so the circuit holds it."""
    graph = GraphIndex(info.n_layers, info.n_heads)
    rng = np.random.default_rng(seed)
    scores = _scores(graph, rng)
    if planted is not None:
        head = graph.writer_index[planted]
        # Negative: a score is the patch's effect on the loss, so the edges that carry the answer score
        # below zero and rank first under either ranking.
        top = float(np.abs(scores).max())
        scores[0, graph.reader_index[f"{planted}<q>"]] = -2 * top
        scores[head, graph.logits_reader] = -2 * top
    n = params.top_n or 30
    if level == "edge":
        selected = mask_of(graph, edge_order(graph, scores, params.ranking)[:n])
        edges = top_n_edges(graph, scores, n, params.ranking)
        node_scores = (scores * graph.valid).sum(1).astype(np.float64)
        blob = np.ascontiguousarray(scores[graph.valid], dtype="<f4").tobytes()
    else:
        node_scores = rng.standard_normal(graph.n_writers)
        edges = top_n_nodes(graph, node_scores, n, params.ranking)
        selected = edges
        blob = np.ascontiguousarray(node_scores, dtype="<f4").tobytes()
    writers, readers = np.nonzero(edges)
    kept_nodes = {graph.writer_names[w] for w in writers.tolist()} | {
        graph.reader_nodes[r] for r in readers.tolist()
    }
    node_set = sorted(graph.writer_index[name] for name in kept_nodes if name not in ("input", "logits"))
    edge_set = sorted((writers * graph.n_readers + readers).tolist())
    # The bootstrap's shares (members only) and the recurrence null, as the store keeps them.
    node_stability = rng.uniform(0.3, 1.0, graph.n_writers + 1)
    edge_stability = rng.uniform(0.3, 1.0, edges.shape)
    size = len(node_set)  # the null matches the circuit's heads and MLPs
    null = inclusion_probabilities(GraphIndex(info.n_layers, info.n_heads), level, size, seed=size)
    now = datetime.now(UTC)
    with transaction(engine, write=True) as session:
        model_id = register_model(session, info)
        relation_row = session.scalars(select(Relation).where(Relation.name == relation)).one()
        components = dict(
            session.execute(select(Component.name, Component.id).where(Component.model_id == model_id))
            .tuples()
            .all()
        )
        run = Run(
            model_id=model_id,
            relation_id=relation_row.id,
            **run_key(params, level),
            corpus_hash=relation_row.content_sha256,
            code_version=default_code_version(),
            batch_size=params.batch_size,
            status="done",
            facts={"total": 30, "known": 20, "unpaired": 0, "discovery": 4, "heldout": 4},
            unpaired_facts=[],
            seconds={"attribution": 1.5, "evaluation": 0.5},
            started_at=now,
            finished_at=now,
        )
        session.add(run)
        session.flush()
        circuit = Circuit(
            run_id=run.id,
            level=level,
            n_nodes=len(kept_nodes),
            n_edges=int(edges.sum()),
            n_random_edges=int(edges.sum()),
            layout="valid_edges" if level == "edge" else "nodes",
            score_rows=graph.n_writers,
            score_cols=graph.n_readers if level == "edge" else 0,
            score_dtype="<f4",
            scores=blob,
            node_set=np.asarray(node_set, dtype="<i4").tobytes(),
            edge_set=np.asarray(edge_set, dtype="<i4").tobytes(),
            target_met=target_met,
            stability={"resamples": 20, "stable_share": 0.8},
            null_inclusion=np.asarray(null, dtype="<f4").tobytes(),
            null_samples=200 if level == "edge" else 0,
            member_stability=np.asarray(node_stability[node_set], dtype="<f4").tobytes(),
            member_roles=np.full(len(node_set), -1, dtype="i1").tobytes(),
        )
        session.add(circuit)
        session.flush()
        session.execute(
            insert(CircuitNode),
            [
                {
                    "circuit_id": circuit.id,
                    "component_id": components[name],
                    "score": float(node_scores[i]) if i < graph.n_writers else None,
                    "in_circuit": name in kept_nodes,
                    "stability": float(np.float32(node_stability[i])) if name in kept_nodes else None,
                }
                for i, name in enumerate(graph.node_names)
            ],
        )
        rows = []
        for w, r in zip(*np.nonzero(selected | edges), strict=True):
            node, _, port = graph.reader_names[r].partition("<")
            rows.append(
                {
                    "circuit_id": circuit.id,
                    "writer_id": components[graph.writer_names[w]],
                    "reader_id": components[node],
                    "port": port.rstrip(">"),
                    "score": float(scores[w, r]) if level == "edge" else None,
                    "in_circuit": bool(edges[w, r]),
                    "stability": float(edge_stability[w, r]) if edges[w, r] else None,
                }
            )
        session.execute(insert(CircuitEdge), rows)
        for split, hit in (("discovery", 0.75), ("heldout", 0.5)):
            session.add(
                Evaluation(
                    circuit_id=circuit.id,
                    split=split,
                    n_facts=4,
                    hit_original=1.0,
                    hit_circuit=hit,
                    hit_random=0.0,
                    metric_full=-1.0,
                    metric_empty=-9.0,
                    metric_circuit=-3.0,
                    metric_random=-8.0,
                    faithfulness=0.75 if split == "discovery" else float("nan"),
                    faithfulness_random=0.1,
                    curve_area=None,
                    curve=None,
                )
            )
        session.flush()
        records.write(session, [circuit.id])  # the API's record, in the circuit's transaction (as the store)
        return circuit.id


@dataclass
class Catalogue:
    url: str
    engine: Engine
    circuits: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (model, relation, method)
    node_circuit: int = 0


def populate(engine: Engine, url: str) -> Catalogue:
    """The bundled corpus; both toy models' circuits of four relations with PARAMS, toy-a's also with
    EAP; one node-level circuit."""
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    catalogue = Catalogue(url, engine)
    seed = 0
    for info in MODELS:
        for relation in RELATIONS:
            seed += 1
            catalogue.circuits[(info.name, relation, "eap-ig")] = store_synthetic(
                engine, info, relation, PARAMS, seed
            )
    eap = DiscoveryParams(method="eap", top_n=30, max_facts=4, known_only=False, curve=False)
    for relation in RELATIONS[:2]:
        seed += 1
        key = ("toy-a", relation, "eap")
        catalogue.circuits[key] = store_synthetic(engine, MODELS[0], relation, eap, seed)
    node = DiscoveryParams(method="eap", top_n=3, max_facts=4, known_only=False, curve=False, level="node")
    catalogue.node_circuit = store_synthetic(engine, MODELS[0], "city_in_country", node, 99, level="node")
    return catalogue


class RecordingSender:
    """Stands in for workers.enqueue.send_job: records (job_id, queue), or fails like a down broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.fail = False

    def __call__(self, job_id: int, queue: str) -> str:
        if self.fail:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
        self.sent.append((job_id, queue))
        return f"task-{job_id}"


def make_client(catalogue: Catalogue, sender: RecordingSender, token: str = TOKEN) -> TestClient:
    settings = Settings(database_url=catalogue.url, api_token=token)
    app = create_app(settings, engine=catalogue.engine, sender=sender, cache=ResponseCache())
    return TestClient(app)


def auth(token: str = TOKEN) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}


REPO = Path(__file__).resolve().parents[2]
