"""The catalogue at the scale of a finished atlas, on PostgreSQL and SQLite: 2,000 synthetic circuits over 3
models (SmolLM2 30x9, GPT-2 small 12x12, GPT-2 medium 24x16) and 49 relations (47 over the 4 knowledge
categories, 2 controls), each circuit ~300 selected edges (85% kept in the circuit) drawn with a skew (a
few heads and MLPs recur in many circuits), every graph node's score row, the full float32 score matrix, the
member sets (node_set, edge_set), the recurrence null (`null_inclusion`: real inclusion probabilities of the
circuit's size, atlas.spec.recurrence), the bootstrap stability of every member (node and edge rows,
`member_stability`), the heads' roles (`member_roles`) and whether the faithfulness target was met (70% met,
10% not, 20% fixed size) as `store_discovery` would keep them.

    .venv/bin/python benchmarks/bench_catalogue_scale.py [--circuits 2000] [--backends postgresql,sqlite]
        [--keep] [--pg-url URL]

The rows are bulk-loaded straight into the schema's tables (COPY on PostgreSQL, executemany into an SQLite
file; models and components through `register_model`); `store_discovery` would need real torch results and is
timed by benchmarks/bench_db.py. It measures: the read-side queries (p50/p95), the plans of their SQL
(PostgreSQL: EXPLAIN (ANALYZE, BUFFERS); SQLite: EXPLAIN QUERY PLAN), COPY against executemany into
circuit_edges (PostgreSQL), and the database's size after 500, 1,000 and 2,000 circuits. The PostgreSQL
database `atlas_scale_<hex>` is created on the server of --pg-url and dropped at the end unless --keep; the
SQLite file lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import Engine, event, select
from sqlalchemy.engine import make_url

from atlas.core.graph import Graph
from atlas.db.engine import make_engine, normalize_url, upgrade
from atlas.db.models import Component
from atlas.db.queries import overlap_matrix
from atlas.db.recurrence import circuits_query, recurring_components
from atlas.db.store import (
    EDGE_COLUMNS,
    MEMBER_DTYPE,
    MEMBER_ROLE_DTYPE,
    MEMBER_STABILITY_DTYPE,
    ModelInfo,
    register_model,
)
from atlas.spec.corpus import CATEGORIES
from atlas.spec.graph import GraphIndex
from atlas.spec.params import params_key
from atlas.spec.recurrence import NULL_DTYPE, NULL_SAMPLES, inclusion_probabilities

MODELS = (
    ModelInfo("smollm2-135m", "LlamaForCausalLM", 30, 9, 576, "float32", "1" * 64),
    ModelInfo("gpt2", "GPT2LMHeadModel", 12, 12, 768, "float32", "2" * 64),
    ModelInfo("gpt2-medium", "GPT2LMHeadModel", 24, 16, 1024, "float32", "3" * 64),
)
KNOWLEDGE = tuple(c for c in CATEGORIES if c != "control")
N_KNOWLEDGE = 47
N_CONTROLS = 2
N_RELATIONS = N_KNOWLEDGE + N_CONTROLS
SELECTED = 300  # edges selected by score per circuit
KEPT = 0.85  # of them kept in the circuit after pruning
CHUNK = 100  # circuits per COPY transaction
MILESTONES = (500, 1000, 2000)
REPS = 40


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- database


@contextmanager
def scratch_database(admin_url: str, keep: bool) -> Iterator[str]:
    """A new empty database `atlas_scale_<hex>` on the server of `admin_url`; its SQLAlchemy URL."""
    url = make_url(normalize_url(admin_url))
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"atlas_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    log(f"created database {name}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            with psycopg.connect(conninfo, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
            log(f"dropped database {name}")


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


# ------------------------------------------------------------------------------------- synthetic rows


class ModelShape:
    """A model's graph as component ids, with a skewed popularity over its valid edges."""

    def __init__(self, info: ModelInfo, model_id: int, components: dict[str, int], rng: np.random.Generator):
        graph = Graph(info.n_layers, info.n_heads)
        self.info, self.model_id, self.graph = info, model_id, graph
        self.node_ids = np.array([components[name] for name in graph.node_names], dtype=np.int64)
        writers, readers = np.nonzero(graph.valid_edges.numpy())
        self.writers, self.readers = writers, readers
        reader_split = [name.partition("<") for name in graph.reader_names]
        self.reader_node = np.array([components[node] for node, _, _ in reader_split], dtype=np.int64)
        self.reader_port = [port.rstrip(">") for _, _, port in reader_split]
        self.writer_ids = self.node_ids[: graph.n_writers]
        self.writer_of_reader = graph.writer_of_reader_node.numpy()  # -1: logits
        # Heavy-tailed popularity of writers and readers: a few heads recur in most circuits.
        writer_pop = rng.pareto(0.9, graph.n_writers) + 0.05
        reader_pop = rng.pareto(0.9, graph.n_readers) + 0.05
        weight = writer_pop[writers] * reader_pop[readers]
        self.log_weight = np.log(weight / weight.sum())
        self.n_valid = int(graph.valid_edges.sum())
        self.is_head = np.zeros(graph.n_writers, dtype=bool)
        self.is_head[[w for w, name in enumerate(graph.writer_names) if name.startswith("a")]] = True
        self._null: dict[int, bytes] = {}

    def null(self, size: int) -> bytes:
        """`circuits.null_inclusion` of a circuit of `size` edges, as the store computes it."""
        if size not in self._null:
            values = inclusion_probabilities(
                GraphIndex(self.info.n_layers, self.info.n_heads), "edge", size, seed=size
            )
            self._null[size] = np.ascontiguousarray(values, dtype=NULL_DTYPE).tobytes()
        return self._null[size]

    def circuit(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The selected edges (indices of valid edges, best first), their scores and in-circuit flags."""
        keys = self.log_weight + rng.gumbel(size=self.log_weight.shape)  # Gumbel top-k: weighted sampling
        chosen = np.argpartition(-keys, SELECTED)[:SELECTED]
        chosen = chosen[np.argsort(-keys[chosen])]
        scores = np.sort(np.abs(rng.standard_normal(SELECTED)))[::-1] * 0.1
        kept = np.arange(SELECTED) < int(SELECTED * KEPT)
        return chosen, scores, kept


def model_shapes(url: str, rng: np.random.Generator) -> list[ModelShape]:
    """The benchmark's models, registered (with their components) if new."""
    engine = make_engine(url)
    shapes = []
    for info in MODELS:
        model_id = register_model(engine, info)
        with engine.connect() as c:
            components: dict[str, int] = dict(
                c.execute(select(Component.name, Component.id).where(Component.model_id == model_id)).all()
            )
        shapes.append(ModelShape(info, model_id, components, rng))
    engine.dispose()
    return shapes


def relation_rows(now: datetime) -> list[tuple[Any, ...]]:
    return [
        (
            i + 1,
            f"relation_{i:02d}",
            f"relation {i}",
            KNOWLEDGE[i % len(KNOWLEDGE)] if i < N_KNOWLEDGE else "control",
            json.dumps(["{} is"]),
            json.dumps(["{} is"]),
            f"{i:064x}",
            now,
        )
        for i in range(N_RELATIONS)
    ]


RELATION_INSERT = (
    'INSERT INTO relations (id, name, title, category, domain, "range", "symmetric", prompt_templates,'
    " prompt_templates_zs, content_sha256, source, created_at)"
    " VALUES (%s, %s, %s, %s, 'x', 'y', false, %s, %s, %s, 'bench', %s)"
)


def build(url: str, n_circuits: int, seed: int = 0) -> dict[int, dict[str, int]]:
    """Load the catalogue on PostgreSQL (COPY); the database's size and table sizes after each milestone
    (and at the end)."""
    rng = np.random.default_rng(seed)
    shapes = model_shapes(url, rng)
    now = datetime.now(UTC)
    sizes: dict[int, dict[str, int]] = {}
    with connect(url) as conn:
        with conn.cursor() as cur:
            cur.executemany(RELATION_INSERT, relation_rows(now))
        conn.commit()
        milestones = sorted({m for m in MILESTONES if m < n_circuits} | {n_circuits})
        start = time.perf_counter()
        for first in range(0, n_circuits, CHUNK):
            ids = range(first + 1, min(first + CHUNK, n_circuits) + 1)
            load_chunk(conn, shapes, ids, rng, now)
            conn.commit()
            done = ids[-1]
            if done in milestones or any(first < m < done for m in milestones):
                sizes[done] = db_sizes(conn)
            if done % 500 == 0 or done == n_circuits:
                log(f"loaded {done} circuits ({time.perf_counter() - start:.1f} s)")
        for table in ("runs", "circuits", "evaluations"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}".encode()
            )
        conn.commit()
    return sizes


def build_sqlite(url: str, n_circuits: int, seed: int = 0) -> dict[int, dict[str, int]]:
    """The same catalogue (same seed, same rows) in an SQLite file, by executemany; sizes as `build`."""
    rng = np.random.default_rng(seed)
    shapes = model_shapes(url, rng)
    now = datetime.now(UTC)
    path = make_url(url).database
    assert path
    sizes: dict[int, dict[str, int]] = {}

    def plain(
        row: tuple[Any, ...],
    ) -> tuple[Any, ...]:  # datetimes as SQLAlchemy's SQLite DateTime stores them
        return tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row)

    def insert(table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * (columns.count(",") + 1))
        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            RELATION_INSERT.replace("%s", "?").replace("false", "0"), [plain(r) for r in relation_rows(now)]
        )
        conn.commit()
        milestones = sorted({m for m in MILESTONES if m < n_circuits} | {n_circuits})
        start = time.perf_counter()
        for first in range(0, n_circuits, CHUNK):
            ids = range(first + 1, min(first + CHUNK, n_circuits) + 1)
            rows = chunk_rows(shapes, ids, rng, now)
            insert("runs", RUN_COLUMNS, [plain(r) for r in rows["runs"]])
            insert("circuits", CIRCUIT_COLUMNS, [plain(r) for r in rows["circuits"]])
            insert("circuit_nodes", NODE_COLUMNS, rows["nodes"])
            insert("circuit_edges", ", ".join(EDGE_COLUMNS), rows["edges"])
            insert("evaluations", EVALUATION_COLUMNS, rows["evaluations"])
            conn.commit()
            done = ids[-1]
            if done in milestones or any(first < m < done for m in milestones):
                sizes[done] = sqlite_sizes(conn, path)
            if done % 500 == 0 or done == n_circuits:
                log(f"loaded {done} circuits into SQLite ({time.perf_counter() - start:.1f} s)")
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()
    return sizes


def sqlite_sizes(conn: sqlite3.Connection, path: str) -> dict[str, int]:
    """The file's size, and each table's pages with its indexes (dbstat)."""
    owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE tbl_name IS NOT NULL"))
    sizes = {"database": os.path.getsize(path), **dict.fromkeys(TABLES, 0)}
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
        table = owner.get(name, name)
        if table in sizes:
            sizes[table] += int(size)
    return sizes


def circuit_key(i: int) -> tuple[int, int, int, str]:
    """Circuit i's model index, relation id, seed and method: every (model, relation) pair gets a share."""
    model = (i - 1) % len(MODELS)
    relation = ((i - 1) // len(MODELS)) % N_RELATIONS + 1
    repeat = (i - 1) // (len(MODELS) * N_RELATIONS)
    return model, relation, repeat // 2, ("eap-ig", "eap")[repeat % 2]


RUN_COLUMNS = (
    "id, model_id, relation_id, params, params_key, method, ig_steps, metric, level, selection, top_n,"
    " threshold, ablation,"
    " template, seed, max_facts, heldout_fraction, known_only, curve, batch_size, corpus_hash, code_version,"
    " status, facts, unpaired_facts, seconds, error, started_at, finished_at, created_at"
)
CIRCUIT_COLUMNS = (
    "id, run_id, level, n_nodes, n_edges, n_random_edges, layout, score_rows, score_cols, score_dtype,"
    " scores, node_set, edge_set, null_inclusion, member_stability, member_roles, target_met, stability,"
    " null_samples, created_at"
)
NODE_COLUMNS = "circuit_id, component_id, score, in_circuit, stability"
EVALUATION_COLUMNS = (
    "id, circuit_id, split, n_facts, hit_original, hit_circuit, hit_random, metric_full, metric_empty,"
    " metric_circuit, metric_random, faithfulness, faithfulness_random, curve_area, curve"
)


def chunk_rows(
    shapes: list[ModelShape], ids: range, rng: np.random.Generator, now: datetime
) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of circuits `ids` for runs, circuits, circuit_nodes, circuit_edges and evaluations."""
    runs: list[tuple[Any, ...]] = []
    circuits: list[tuple[Any, ...]] = []
    nodes: list[tuple[Any, ...]] = []
    edges: list[tuple[Any, ...]] = []
    evaluations: list[tuple[Any, ...]] = []
    for i in ids:
        model, relation, seed, method = circuit_key(i)
        shape = shapes[model]
        params = {"method": method, "seed": seed, "top_n": SELECTED, "metric": "logit_diff", "level": "edge"}
        runs.append(
            (i, shape.model_id, relation, json.dumps(params), params_key(params), method,
             5 if method == "eap-ig" else 1, "logit_diff", "edge", "top_n", SELECTED, 0.0, "mean", "", seed,
             100, 0.2, True, False, 16, "c" * 64, "bench", "done", json.dumps({"total": 100, "known": 60}),
             "[]", json.dumps({"attribute": 12.5}), None, now, now, now)
        )  # fmt: skip
        chosen, scores, kept = shape.circuit(rng)
        writers, readers = shape.writers[chosen], shape.readers[chosen]
        writer_ids, reader_ids = shape.writer_ids[writers], shape.reader_node[readers]
        in_nodes = set(writer_ids[kept].tolist()) | set(reader_ids[kept].tolist())
        blob = rng.standard_normal(shape.n_valid, dtype=np.float32).astype("<f4").tobytes()
        n_kept = int(kept.sum())
        # The member sets store_discovery writes: writer indices of the heads/MLPs, flat edge indices.
        in_writers = np.union1d(writers[kept], shape.writer_of_reader[readers[kept]])
        members = in_writers[in_writers > 0]  # not input (0), logits (-1)
        flat = np.sort(writers[kept] * shape.graph.n_readers + readers[kept])
        # The bootstrap's shares (every graph node drawn, members kept) and the heads' roles.
        shares = rng.beta(5.0, 1.5, len(shape.node_ids)).astype(np.float32)
        roles = np.where(shape.is_head[members], rng.integers(0, 4, len(members)), -1)
        target_met = (True, False, None)[int(rng.choice(3, p=(0.7, 0.1, 0.2)))]
        circuits.append(
            (i, i, "edge", len(in_nodes), n_kept, n_kept, "valid_edges", shape.graph.n_writers,
             shape.graph.n_readers, "<f4", blob, members.astype(MEMBER_DTYPE).tobytes(),
             flat.astype(MEMBER_DTYPE).tobytes(), shape.null(n_kept),
             shares[members].astype(MEMBER_STABILITY_DTYPE).tobytes(),
             roles.astype(MEMBER_ROLE_DTYPE).tobytes(),
             target_met, json.dumps({"resamples": 20, "stable_share": 0.8}), NULL_SAMPLES, now)
        )  # fmt: skip
        node_scores = rng.standard_normal(len(shape.node_ids))
        for k, component in enumerate(shape.node_ids.tolist()):
            score = None if k == len(shape.node_ids) - 1 else float(node_scores[k])
            member = component in in_nodes
            nodes.append((i, component, score, member, float(shares[k]) if member else None))
        edge_shares = rng.beta(5.0, 1.5, len(chosen))
        for w, r, port_of, score, keep, share in zip(
            writer_ids.tolist(),
            reader_ids.tolist(),
            readers.tolist(),
            scores.tolist(),
            kept.tolist(),
            edge_shares.tolist(),
            strict=True,
        ):
            edges.append((i, w, r, shape.reader_port[port_of], score, keep, share if keep else None))
        curve = json.dumps([[p, p * 10, p / 100] for p in (1, 10, 100)])
        evaluations.append((2 * i - 1, i, "discovery", 16, 1.0, 0.9, 0.1, -1.0, -9.0, -2.0, -8.0, 0.8, 0.1,
                            0.7, curve))  # fmt: skip
        evaluations.append((2 * i, i, "heldout", 16, 1.0, 0.8, 0.1, -1.0, -9.0, -2.0, -8.0, 0.7, 0.1,
                            None, None))  # fmt: skip
    return {"runs": runs, "circuits": circuits, "nodes": nodes, "edges": edges, "evaluations": evaluations}


def load_chunk(
    conn: psycopg.Connection[Any],
    shapes: list[ModelShape],
    ids: range,
    rng: np.random.Generator,
    now: datetime,
) -> None:
    rows = chunk_rows(shapes, ids, rng, now)
    with conn.cursor() as cur:
        copy_rows(cur, f"runs ({RUN_COLUMNS})", rows["runs"])
        cur.executemany(
            f"INSERT INTO circuits ({CIRCUIT_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %b, %b, %b, %b, %b, %b, %s, %s, %s, %s)".encode(),
            rows["circuits"],
        )
        copy_rows(cur, f"circuit_nodes ({NODE_COLUMNS})", rows["nodes"])
        copy_rows(cur, f"circuit_edges ({', '.join(EDGE_COLUMNS)})", rows["edges"])
        copy_rows(cur, f"evaluations ({EVALUATION_COLUMNS})", rows["evaluations"])


def copy_rows(cur: psycopg.Cursor[Any], target: str, rows: list[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {target} FROM STDIN".encode()) as copy:
        for row in rows:
            copy.write_row(row)


TABLES = ("circuits", "circuit_edges", "circuit_nodes", "runs", "evaluations", "components", "relations")


def db_sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    sizes = {"database": int(row[0])}
    for table in TABLES:
        value = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()
        assert value is not None
        sizes[table] = int(value[0])
    return sizes


# --------------------------------------------------------------------------------------------- queries


def percentiles(fn: Callable[[], Any], reps: int) -> tuple[float, float, Any]:
    value = fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    p95 = times[min(len(times) - 1, int(np.ceil(0.95 * len(times))) - 1)]
    return statistics.median(times) * 1000, p95 * 1000, value


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and parameters) the engine sends while inside."""
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def explain(engine: Engine, statement: str, parameters: Any, max_lines: int = 40) -> list[str]:
    """PostgreSQL's EXPLAIN (ANALYZE, BUFFERS), or SQLite's EXPLAIN QUERY PLAN, of one statement."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            level: dict[int, int] = {}
            plan: list[Any] = []
            for node, parent, _, detail in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters
            ):
                level[node] = level.get(parent, -1) + 1
                plan.append("  " * level[node] + detail)
        else:
            plan = list(conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).scalars())
    lines = [str(line) if len(str(line)) <= 200 else str(line)[:200] + " ..." for line in plan]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 3], f"   ... ({len(lines) - max_lines + 1} lines trimmed)", *lines[-2:]]
    return lines


def bench_queries(url: str, model: str) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    engine = make_engine(url)
    rows: list[tuple[str, float, float, str]] = []
    out: list[str] = []
    queries: list[tuple[str, Callable[[], Any], Callable[[Any], str]]] = [
        (
            f"recurring_components({model})",
            lambda: recurring_components(engine, model),
            lambda found: f"{len(found)} components",
        ),
        (
            f"recurring_components({model}, factual, eap-ig)",
            lambda: recurring_components(engine, model, category="factual", method="eap-ig"),
            lambda found: f"{len(found)} components",
        ),
        (
            f"recurring_components({model}, max_q=0.05, exclude_generic, min_stability=0.75)",
            lambda: recurring_components(engine, model, max_q=0.05, exclude_generic=True, min_stability=0.75),
            lambda found: f"{len(found)} components",
        ),
        (
            f"overlap_matrix({model})",
            lambda: overlap_matrix(engine, model),
            lambda m: f"{len(m.circuits)} x {len(m.circuits)}",
        ),
        (
            f"overlap_matrix({model}, factual)",
            lambda: overlap_matrix(engine, model, category="factual"),
            lambda m: f"{len(m.circuits)} x {len(m.circuits)}",
        ),
    ]
    for label, fn, describe in queries:
        p50, p95, value = percentiles(fn, REPS)
        rows.append((label, p50, p95, describe(value)))
    # Python's generation-2 collections scan this process's whole heap (torch is imported here), and land
    # in some repetitions: timed again with the heap so far frozen out of the collector, as a long-running
    # server would have it after start-up.
    gc.collect()
    gc.freeze()
    for label, fn, describe in queries:
        p50, p95, value = percentiles(fn, REPS)
        rows.append((label + " [gc.freeze]", p50, p95, describe(value)))
    gc.unfreeze()
    log("queries timed")
    for label, fn in (
        ("recurring_components", lambda: recurring_components(engine, model)),
        ("overlap_matrix", lambda: overlap_matrix(engine, model)),
    ):
        with captured(engine) as statements:
            fn()
        statements = [(s, p) for s, p in statements if not s.lstrip().upper().startswith("BEGIN")]
        if label == "recurring_components" and engine.dialect.name == "postgresql":
            # its circuits are read through the driver's binary protocol, unseen by the engine's events
            compiled = circuits_query(model, None, None).compile(
                dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
            )
            statements.append((str(compiled), compiled.params))
        for k, (statement, parameters) in enumerate(statements, 1):
            how = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
            out.append(f"--- {how}: {label}, statement {k} of {len(statements)}")
            out.append("    " + " ".join(statement.split())[:400])
            out += ["    " + line for line in explain(engine, statement, parameters)]
    engine.dispose()
    return rows, out


# ------------------------------------------------------------------------------------------ load rate


def bench_load(url: str, n_circuits: int, first_id: int, rng: np.random.Generator) -> dict[str, float]:
    """COPY against executemany of the same circuit_edges rows for `n_circuits` new circuits, rolled back."""
    engine = make_engine(url)
    shapes = []
    with engine.connect() as c:
        for info in MODELS:
            model_id = c.exec_driver_sql(
                "SELECT id FROM models WHERE name = %(n)s", {"n": info.name}
            ).scalar()
            components: dict[str, int] = dict(
                c.exec_driver_sql(
                    "SELECT name, id FROM components WHERE model_id = %(m)s", {"m": model_id}
                ).all()
            )
            shapes.append(ModelShape(info, int(model_id or 0), components, rng))
    engine.dispose()
    now = datetime.now(UTC)
    with connect(url) as conn:
        ids = range(first_id, first_id + n_circuits)
        load_chunk(conn, shapes, ids, rng, now)  # runs, circuits, nodes, edges of the new circuits
        edges = conn.execute(
            f"SELECT {', '.join(EDGE_COLUMNS)} FROM circuit_edges WHERE circuit_id >= %s".encode(),
            (first_id,),
        ).fetchall()
        conn.execute("DELETE FROM circuit_edges WHERE circuit_id >= %s", (first_id,))
        result: dict[str, float] = {"rows": len(edges)}
        with conn.cursor() as cur:
            cur.execute("SAVEPOINT load")
            start = time.perf_counter()
            copy_rows(cur, f"circuit_edges ({', '.join(EDGE_COLUMNS)})", edges)
            result["copy"] = len(edges) / (time.perf_counter() - start)
            cur.execute("ROLLBACK TO SAVEPOINT load")
            start = time.perf_counter()
            cur.executemany(
                f"INSERT INTO circuit_edges ({', '.join(EDGE_COLUMNS)})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)".encode(),
                edges,
            )
            result["executemany"] = len(edges) / (time.perf_counter() - start)
        conn.rollback()
    return result


# ----------------------------------------------------------------------------------------------- main


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def member_set_bytes(url: str) -> float:
    """The member sets' bytes per circuit, on average."""
    engine = make_engine(url)
    with engine.connect() as c:
        value = c.exec_driver_sql("SELECT avg(length(node_set) + length(edge_set)) FROM circuits").scalar()
    engine.dispose()
    return float(value or 0)


def run_postgresql(args: argparse.Namespace) -> dict[str, Any]:
    with scratch_database(args.pg_url, args.keep) as url:
        log("upgrade to head")
        upgrade(url)
        start = time.perf_counter()
        sizes = build(url, args.circuits)
        build_s = time.perf_counter() - start
        with connect(url) as conn:
            conn.autocommit = True
            log("VACUUM ANALYZE")
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")  # the load's dirty pages written now, not during the timings
        report = describe(url)
        query_rows, plans = bench_queries(url, MODELS[0].name)
        log("COPY vs executemany")
        load = bench_load(url, args.load_circuits, args.circuits + 1, np.random.default_rng(1))
    return {**report, "build_s": build_s, "sizes": sizes, "queries": query_rows, "plans": plans, "load": load}


def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="atlas_scale_") as folder:
        url = f"sqlite:///{folder}/atlas.db"
        if args.keep:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='atlas_scale_')}/atlas.db"
            log(f"keeping the SQLite file {make_url(url).database}")
        log(f"SQLite: upgrade to head ({url})")
        upgrade(url)
        start = time.perf_counter()
        sizes = build_sqlite(url, args.circuits)
        build_s = time.perf_counter() - start
        report = describe(url)
        query_rows, plans = bench_queries(url, MODELS[0].name)
    return {**report, "build_s": build_s, "sizes": sizes, "queries": query_rows, "plans": plans}


def describe(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    with engine.connect() as c:
        counts = {t: int(c.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() or 0) for t in TABLES}
        per_model = c.exec_driver_sql(
            "SELECT m.name, count(*) FROM circuits c JOIN runs r ON r.id = c.run_id"
            " JOIN models m ON m.id = r.model_id GROUP BY m.name ORDER BY m.name"
        ).all()
    engine.dispose()
    return {"counts": counts, "per_model": per_model, "member_bytes": member_set_bytes(url)}


def print_report(backend: str, n_circuits: int, report: dict[str, Any]) -> None:
    print(f"\n=== {backend}: {n_circuits} circuits, {N_RELATIONS} relations, {len(MODELS)} models; built in "
          f"{report['build_s']:.1f} s")  # fmt: skip
    print("rows: " + ", ".join(f"{t} {c:,}" for t, c in report["counts"].items()))
    print("circuits per model: " + ", ".join(f"{name} {n}" for name, n in report["per_model"]))
    print(f"\n1. Queries ({REPS} repetitions after a warm-up; {backend})")
    print(f"{'query':<64} {'p50 ms':>9} {'p95 ms':>9}  result")
    for label, p50, p95, what in report["queries"]:
        print(f"{label:<64} {p50:>9.1f} {p95:>9.1f}  {what}")
    print("\n2. Plans")
    print("\n".join(report["plans"]))
    load = report.get("load")
    if load:
        print(
            f"\n3. Bulk load of circuit_edges ({int(load['rows']):,} rows, same rows each way, rolled back)"
        )
        print(f"{'method':<14} {'rows/s':>12}")
        print(f"{'COPY':<14} {load['copy']:>12,.0f}")
        print(f"{'executemany':<14} {load['executemany']:>12,.0f}")
        print(f"COPY / executemany = {load['copy'] / load['executemany']:.1f}x")
    how = "file size; dbstat pages" if backend == "SQLite" else "pg_database_size and pg_total_relation_size"
    print(f"\n4. Size (MiB; {how}, incl. indexes and TOAST)")
    sizes = report["sizes"]
    header = f"{'circuits':>8} {'database':>10} {'KiB/circ.':>10} " + " ".join(f"{t:>13}" for t in TABLES[:5])
    print(header)
    for n, size in sorted(sizes.items()):
        cells = " ".join(f"{mib(size[t]):>13}" for t in TABLES[:5])
        print(f"{n:>8} {mib(size['database']):>10} {size['database'] / n / 1024:>10,.1f} {cells}")
    marks = sorted(sizes)
    if len(marks) > 1:
        a, b = marks[0], marks[-1]
        growth = (sizes[b]["database"] - sizes[a]["database"]) / (b - a) / 1024
        no_blob = sum(sizes[b][t] - sizes[a][t] for t in TABLES[1:5]) / (b - a) / 1024
        print(f"marginal per circuit ({a}->{b}): {growth:,.1f} KiB in all; "
              f"{no_blob:,.1f} KiB without the circuits table (score blobs, member sets)")  # fmt: skip
    print(f"member sets (node_set + edge_set): {report['member_bytes']:,.0f} bytes per circuit on average")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--circuits", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database on the server to create the scratch database on",
    )
    parser.add_argument(
        "--backends", default="postgresql,sqlite", help="comma-separated: postgresql, sqlite (default both)"
    )
    parser.add_argument(
        "--load-circuits", type=int, default=200, help="circuits in the COPY/executemany test"
    )
    args = parser.parse_args()
    total = time.perf_counter()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    reports = {}
    for backend in backends:
        if backend == "postgresql":
            reports["PostgreSQL"] = run_postgresql(args)
        elif backend == "sqlite":
            reports["SQLite"] = run_sqlite(args)
        else:
            parser.error(f"unknown backend {backend!r}")
    for backend, report in reports.items():
        print_report(backend, args.circuits, report)
    print(f"\ntotal run {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
