"""Catalogue speed at SmolLM2's size (30 layers, 9 heads, 123,211 edges), on synthetic circuits: storing a
circuit (top-300 and a 5% threshold circuit of ~6,000 edges, which exercises the bulk edge load), storing it
again (found, not redone), reading the score matrix back, re-cutting, and the read-side queries.

    .venv/bin/python benchmarks/bench_db.py [--pg URL] [--circuits 10]

SQLite goes to a temporary file; PostgreSQL to a throw-away database on 127.0.0.1:5432 when reachable (or to
--pg URL, which must be an empty database).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from atlas.core.circuit import random_circuit, threshold, top_n
from atlas.core.corpus import Fact, Relation
from atlas.core.discover import DiscoveryParams, DiscoveryResult, FactCounts
from atlas.core.evaluation import CurvePoint, FaithfulnessCurve, SplitEvaluation
from atlas.core.graph import Graph
from atlas.db.engine import make_engine, upgrade
from atlas.db.queries import compare_circuits, list_circuits, overlap_matrix
from atlas.db.recurrence import recurring_components
from atlas.db.store import ModelInfo, load_scores, recut, store_discovery

GRAPH = Graph(30, 9)
MODEL = ModelInfo("smollm2-135m", "LlamaForCausalLM", 30, 9, 576, "float32", "0" * 64)


def relation(i: int) -> Relation:
    return Relation(
        name=f"bench_relation_{i}",
        title=f"bench relation {i}",
        category="factual",
        domain="x",
        range="y",
        symmetric=False,
        prompt_templates=("{} is",),
        prompt_templates_zs=("{} is",),
        facts=tuple(Fact(f"s{j}", f"o{j}") for j in range(30)),
        source="bench",
    )


def result(i: int, by_threshold: bool) -> DiscoveryResult:
    scores = torch.randn(GRAPH.n_writers, GRAPH.n_readers, generator=torch.Generator().manual_seed(i))
    scores = scores * GRAPH.valid_edges
    if by_threshold:
        tau = float(scores.abs()[GRAPH.valid_edges].quantile(0.95))
        circuit, params = threshold(GRAPH, scores, tau), DiscoveryParams(threshold=tau)
    else:
        circuit, params = top_n(GRAPH, scores, 300), DiscoveryParams(top_n=300)
    split = SplitEvaluation(16, 1.0, 0.9, 0.1, -1.0, -9.0, -2.0, -8.0)
    return DiscoveryResult(
        model=MODEL.name,
        relation=f"bench_relation_{i}",
        category="factual",
        params=params,
        counts=FactCounts(30, 0, 30, 30, 15, 15),
        circuit=circuit,
        random=random_circuit(GRAPH, circuit.n_edges, seed=i),
        scores=scores,
        discovery=split,
        heldout=replace(split),
        curve=FaithfulnessCurve([CurvePoint(p, int(GRAPH.n_edges * p / 100), p / 100) for p in (1, 10, 100)]),
    )


def timed(rows: list[tuple[str, str, float]], backend: str, label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    rows.append((backend, label, time.perf_counter() - start))
    return value


@contextmanager
def pg_database(url: str | None) -> Iterator[str | None]:
    if url:
        yield url
        return
    try:
        import psycopg

        admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
    except Exception as error:
        print(f"PostgreSQL skipped: {str(error).strip().splitlines()[0]}")
        yield None
        return
    name = f"atlas_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        admin.close()


def bench(backend: str, url: str, n_circuits: int, rows: list[tuple[str, str, float]]) -> None:
    upgrade(url)
    engine = make_engine(url)
    results = [result(i, by_threshold=(i == 0)) for i in range(n_circuits)]
    relations = [relation(i) for i in range(n_circuits)]
    big = results[0]
    ids = [
        timed(
            rows,
            backend,
            f"store threshold circuit ({big.circuit.n_edges} edges)",
            lambda: store_discovery(engine, big, MODEL, relations[0], "c", "bench"),
        )
    ]
    timed(
        rows,
        backend,
        "store it again (found)",
        lambda: store_discovery(engine, big, MODEL, relations[0], "c", "bench"),
    )
    start = time.perf_counter()
    for res, rel in zip(results[1:], relations[1:], strict=True):
        ids.append(store_discovery(engine, res, MODEL, rel, "c", "bench"))
    rows.append(
        (backend, "store top-300 circuit (mean)", (time.perf_counter() - start) / max(1, n_circuits - 1))
    )
    timed(rows, backend, "load score matrix", lambda: load_scores(engine, ids[1]))
    timed(rows, backend, "re-cut at top-1000", lambda: recut(engine, ids[1], 1000))
    timed(
        rows,
        backend,
        f"recurring components ({n_circuits} circuits)",
        lambda: recurring_components(engine, MODEL.name),
    )
    timed(rows, backend, "compare 3 circuits", lambda: compare_circuits(engine, ids[1:4]))
    timed(rows, backend, "overlap matrix", lambda: overlap_matrix(engine, MODEL.name))
    timed(rows, backend, "list page of 50", lambda: list_circuits(engine, limit=50))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", default=None, help="URL of an empty PostgreSQL database")
    parser.add_argument("--circuits", type=int, default=10)
    args = parser.parse_args()
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        bench("sqlite", f"sqlite:///{Path(folder) / 'atlas.db'}", args.circuits, rows)
    with pg_database(args.pg) as url:
        if url:
            bench("postgresql", url, args.circuits, rows)
    print(f"{'backend':<11} {'operation':<44} {'ms':>9}")
    for backend, label, seconds in rows:
        print(f"{backend:<11} {label:<44} {seconds * 1000:>9.1f}")


if __name__ == "__main__":
    main()
