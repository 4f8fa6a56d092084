"""The query API under load: a 2,000-circuit synthetic catalogue in a throw-away PostgreSQL database
(built by benchmarks/bench_catalogue_scale.py's loader, with each circuit's record stored as the store
writes it: atlas.db.records), the API served by uvicorn (`api.server.serve`,
--processes worker processes, access log off), and 32 concurrent keep-alive clients on loopback per endpoint.

    .venv/bin/python benchmarks/bench_api.py [--circuits 2000] [--clients 32] [--requests 60] [--processes 2]

Endpoints (each request draws its parameters at random, seeded):
  listing    GET /circuits?model=M&limit=50&after=A      (3 models x 40 cursors)
  circuit    GET /circuits/{id}                           (any of the 2,000)
  recurring  GET /components/recurring?model=M[&category=C]  (3 models x 5 filters)
  compare    GET /compare?ids=a&ids=b[&ids=c]             (2 or 3 random circuits of a model: ~never repeated)

Each endpoint runs twice: with the response cache (as `atlas serve` runs) and with it off
(ATLAS_API_CACHE_MB=0), so the table shows both what a warm server answers and what the queries cost. The
load is bounded: `clients` x `requests` requests per endpoint after a warm-up of one request per client. The
clients are a small asyncio HTTP/1.1 client (keep-alive, Content-Length bodies) so that the load generator,
which shares the machine's cores with the server and PostgreSQL, takes as little CPU as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_catalogue_scale import MODELS, build, connect, log, scratch_database

from atlas.db.engine import make_engine, upgrade
from atlas.db.records import fill_missing

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int, processes: int, cache_mb: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ATLAS_DATABASE_URL": url, "ATLAS_API_CACHE_MB": cache_mb}
    code = (
        "from api.server import serve; "
        f"serve('127.0.0.1', {port}, {processes}, access_log=False, log_level='warning')"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, start_new_session=True)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ------------------------------------------------------------------------------------ a lean HTTP client


class Connection:
    """One keep-alive HTTP/1.1 connection: GET a path, get (status, body length)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, int]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status, length

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(
    port: int, paths: Callable[[random.Random], str], clients: int, requests: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}

    async def client(k: int) -> None:
        nonlocal errors
        rng = random.Random(k)
        connection = Connection(port)
        try:
            await connection.get(paths(rng))  # warm-up: connect, and the first answer of this client
            for _ in range(requests):
                path = paths(rng)
                start = time.perf_counter()
                try:
                    status, _ = await connection.get(path)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    connection.close()
                    connection = Connection(port)
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "n": len(latencies),
        "rps": len(latencies) / wall,
        "p50": statistics.median(latencies) * 1000,
        "p95": pct(95),
        "p99": pct(99),
        "errors": errors,
        "statuses": statuses,
    }


# ------------------------------------------------------------------------------------------- workload


def workloads(url: str) -> dict[str, Callable[[random.Random], str]]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT m.name, c.id FROM circuits c JOIN runs r ON r.id = c.run_id"
            " JOIN models m ON m.id = r.model_id ORDER BY c.id"
        ).fetchall()
    by_model: dict[str, list[int]] = {}
    for name, circuit_id in rows:
        by_model.setdefault(name, []).append(circuit_id)
    models = sorted(by_model)
    ids = [i for _, i in rows]
    cursors = {m: [0, *by_model[m][49::50][:39]] for m in models}  # 40 pages of 50 per model

    def listing(rng: random.Random) -> str:
        model = rng.choice(models)
        after = rng.choice(cursors[model])
        return f"/circuits?model={model}&limit=50" + (f"&after={after}" if after else "")

    def circuit(rng: random.Random) -> str:
        return f"/circuits/{rng.choice(ids)}"

    def recurring(rng: random.Random) -> str:
        model = rng.choice(models)
        extra = rng.choice(
            ["", "&category=factual", "&category=linguistic", "&method=eap-ig", "&min_count=10"]
        )
        return f"/components/recurring?model={model}{extra}"

    def compare(rng: random.Random) -> str:
        pool = by_model[rng.choice(models)]
        chosen = rng.sample(pool, rng.choice([2, 3]))
        return "/compare?" + "&".join(f"ids={i}" for i in chosen)

    return {"listing": listing, "circuit": circuit, "recurring": recurring, "compare": compare}


def wait_up(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = asyncio.run(Connection(port).get("/health"))
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the API server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--circuits", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=60, help="per client, per endpoint")
    parser.add_argument("--processes", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    results: list[tuple[str, str, dict[str, Any]]] = []
    with scratch_database(args.pg_url, args.keep) as url:
        upgrade(url)
        start = time.perf_counter()
        build(url, args.circuits)
        # The loader writes rows, not records: store them as store_discovery does with each circuit.
        engine = make_engine(url)
        start_records = time.perf_counter()
        filled = fill_missing(engine)
        engine.dispose()
        log(f"records of {filled} circuits stored in {time.perf_counter() - start_records:.0f} s")
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        log(f"catalogue of {args.circuits} circuits built in {time.perf_counter() - start:.0f} s")
        paths = workloads(url)
        for cache_mb, label in (("64", "cache on"), ("0", "cache off")):
            port = free_port()
            server = start_server(url, port, args.processes, cache_mb)
            try:
                wait_up(port)
                for name, path in paths.items():
                    result = asyncio.run(load(port, path, args.clients, args.requests))
                    log(f"{label:<9} {name:<10} {result['rps']:7.0f} req/s  p95 {result['p95']:7.1f} ms")
                    results.append((label, name, result))
            finally:
                stop_server(server)
    load_avg = os.getloadavg()[0]
    print(
        f"\nAPI under load: {args.circuits} circuits ({len(MODELS)} models), {args.clients} concurrent "
        f"clients x {args.requests} requests per endpoint, uvicorn with {args.processes} worker processes, "
        f"PostgreSQL on loopback; {os.cpu_count()} CPUs shared by server, database and load generator "
        f"(load avg {load_avg:.1f})"
    )
    print(
        f"{'endpoint':<10} {'cache':<9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    for label, name, r in sorted(results, key=lambda x: (list(paths).index(x[1]), x[0] != "cache on")):
        print(
            f"{name:<10} {label:<9} {r['rps']:>7.0f} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} "
            f"{r['errors']:>7}"
        )


if __name__ == "__main__":
    main()
