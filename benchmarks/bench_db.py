"""Catalogue speed at SmolLM2's size (30 layers, 9 heads, 123,211 edges), on synthetic circuits: storing a
circuit (of 300 edges, about what the old top-300 default kept; of 2,464 edges, the largest circuit the
faithfulness search may pick on SmolLM2, 2% of its edges; and a 5% threshold cut, ~3,500-3,900 edges after
pruning), storing one again (found, not redone), reading the score matrix back, re-cutting, and the
read-side queries. A store includes everything `store_discovery` does, the recurrence null of the circuit's
size (atlas.spec.recurrence) among it.

    .venv/bin/python benchmarks/bench_db.py [--pg URL] [--repeats 5]

The model and the relations are registered before anything is timed, and one circuit is stored and each
query run once untimed first (statement compilation, the first connection). Every row is then `--repeats`
samples: the stores each store a new circuit (of a new relation), the reads repeat the same call. The table
shows the median and the range (min-max) of the samples, in milliseconds, and the 1-minute load average at
the start and end of each backend's run: on a shared machine, read them with it.

SQLite goes to a temporary file; PostgreSQL to a throw-away database on 127.0.0.1:5432 when reachable (or to
--pg URL, which must be an empty database).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from atlas.core.circuit import random_circuit, threshold, top_n
from atlas.core.discover import DiscoveryParams, DiscoveryResult, FactCounts
from atlas.core.evaluation import CurvePoint, FaithfulnessCurve, SplitEvaluation
from atlas.core.graph import Graph
from atlas.db.engine import make_engine, upgrade
from atlas.db.queries import compare_circuits, list_circuits, overlap_matrix
from atlas.db.recurrence import recurring_components
from atlas.db.recut import load_scores, recut
from atlas.db.store import ModelInfo, import_relations, register_model, store_discovery
from atlas.spec import graph as index
from atlas.spec.corpus import Fact, Relation
from atlas.spec.params import max_edges_for

GRAPH = Graph(30, 9)
MODEL = ModelInfo("smollm2-135m", "LlamaForCausalLM", 30, 9, 576, "float32", "0" * 64)
CAP = max_edges_for(GRAPH.n_edges, None)  # 2,464: the faithfulness search's default cap on SmolLM2


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


def kept_top_n(scores: torch.Tensor, kept: int) -> int:
    """The smallest n whose top-n circuit keeps at least `kept` edges after pruning. Random scores prune
    hard (the top 300 of them keep almost nothing), while real circuits keep most of what they select, so
    the synthetic circuits are cut to the number of edges kept, as real ones are sized."""
    order = index.edge_order(GRAPH, scores.numpy(), "absolute")
    low, high = kept, len(order)
    while low < high:
        mid = (low + high) // 2
        if int(index.prune(GRAPH, index.mask_of(GRAPH, order[:mid])).sum()) >= kept:
            high = mid
        else:
            low = mid + 1
    return low


def result(i: int, size: int | None) -> DiscoveryResult:
    """A synthetic result for relation i: a circuit keeping about `size` edges after pruning, or (size None)
    a 5% threshold circuit."""
    scores = torch.randn(GRAPH.n_writers, GRAPH.n_readers, generator=torch.Generator().manual_seed(i))
    scores = scores * GRAPH.valid_edges
    if size is None:
        tau = float(scores.abs()[GRAPH.valid_edges].quantile(0.95))
        params = DiscoveryParams(threshold=tau, ranking="absolute")
        circuit = threshold(GRAPH, scores, tau, "absolute")
    else:
        n = kept_top_n(scores, size)
        circuit, params = top_n(GRAPH, scores, n, "absolute"), DiscoveryParams(top_n=n, ranking="absolute")
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


@dataclass
class Row:
    backend: str
    label: str
    samples: list[float] = field(default_factory=list)


def timed(row: Row, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    row.samples.append(time.perf_counter() - start)
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


def bench(backend: str, url: str, repeats: int, rows: list[Row], loads: dict[str, str]) -> None:
    load_start = os.getloadavg()[0]
    upgrade(url)
    engine = make_engine(url)
    # Relation 0 is the untimed warm-up; then `repeats` relations per kind of circuit stored.
    kinds: list[tuple[str, int | None]] = [("300-edge", 300), (f"{CAP:,}-edge", CAP), ("5%-threshold", None)]
    relations = [relation(i) for i in range(1 + repeats * len(kinds))]
    register_model(engine, MODEL)
    import_relations(engine, relations)

    def store(i: int, res: DiscoveryResult) -> int:
        return store_discovery(engine, res, MODEL, relations[i], "c", "bench")

    warm_id = store(0, result(0, 300))
    ids: dict[str, list[int]] = {}
    i = 1
    for name, size in kinds:
        row = Row(backend, "")
        kept = []
        for _ in range(repeats):
            res = result(i, size)  # built before the clock starts: only the store is timed
            ids.setdefault(name, []).append(timed(row, partial(store, i, res)))
            kept.append(res.circuit.n_edges)
            i += 1
        span = f"{min(kept):,}" if min(kept) == max(kept) else f"{min(kept):,}-{max(kept):,}"
        row.label = f"store a {name} circuit ({span} edges)"
        rows.append(row)
    again = result(1, 300)
    row = Row(backend, "store a 300-edge run again (found)")
    for _ in range(repeats):
        timed(row, lambda: store(1, again))
    rows.append(row)

    top = ids["300-edge"]
    n_circuits = 1 + len(kinds) * repeats
    reads: list[tuple[str, Callable[[], Any]]] = [
        ("load score matrix", lambda: load_scores(engine, top[0])),
        ("re-cut at top-1000", lambda: recut(engine, top[0], 1000)),
        (f"recurring components ({n_circuits} circuits)", lambda: recurring_components(engine, MODEL.name)),
        ("compare 3 circuits", lambda: compare_circuits(engine, top[:3])),
        (f"overlap matrix ({n_circuits} circuits)", lambda: overlap_matrix(engine, MODEL.name)),
        ("a catalogue page of 50", lambda: list_circuits(engine, limit=50)),
    ]
    for label, fn in reads:
        fn()  # untimed first call
        row = Row(backend, label)
        for _ in range(repeats):
            timed(row, fn)
        rows.append(row)
    assert warm_id not in top
    engine.dispose()
    loads[backend] = f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=None, help="URL of an empty PostgreSQL database")
    parser.add_argument("--repeats", type=int, default=5, help="samples per row (at least 3 for a range)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (compare 3 circuits needs 3 stored)")
    rows: list[Row] = []
    loads: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        bench("sqlite", f"sqlite:///{Path(folder) / 'atlas.db'}", args.repeats, rows, loads)
    with pg_database(args.pg) as url:
        if url:
            bench("postgresql", url, args.repeats, rows, loads)
    print(
        f"SmolLM2-shaped synthetic circuits, {args.repeats} samples per row; {os.cpu_count()} CPUs; "
        "1-min load average at start -> end: " + ", ".join(f"{b} {v}" for b, v in loads.items())
    )
    print("| backend | operation | median ms | min-max ms |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        ms = [s * 1000 for s in row.samples]
        print(f"| {row.backend} | {row.label} | {statistics.median(ms):.1f} | {min(ms):.1f}-{max(ms):.1f} |")


if __name__ == "__main__":
    main()
