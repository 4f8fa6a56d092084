"""End to end on PostgreSQL with real processes: `atlas serve` (uvicorn) on a free port and `atlas worker`
(Celery, Redis database 11, flushed), both as subprocesses. A job scheduled through the API is run by the
worker (the tiny random Llama, plain EAP, 4 facts: seconds of work), its circuit then appears in the
catalogue listing and in the recurring-components query, and asking again returns the stored run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import REPO, pg_database
from services import require_redis

from atlas.db.engine import make_engine, upgrade
from atlas.db.store import import_relations
from atlas.spec.corpus import bundled_corpus_path, load_corpus

REDIS_DB = 11
TOKEN = "e2e-token-9f8e7d"
JOB = {
    "model": "tiny-llama",
    "relations": ["country_capital_city"],
    "method": "eap",
    "top_n": 30,
    "max_facts": 4,
    "known_only": False,  # a random model knows no facts
    "curve": False,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)  # skipped without a server; failed in CI


@pytest.fixture
def database(pg_admin: str) -> Iterator[str]:
    for url in pg_database(pg_admin):
        upgrade(url)
        engine = make_engine(url)
        import_relations(engine, load_corpus(bundled_corpus_path()).values())
        engine.dispose()
        yield url


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "atlas", *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the worker's children are stopped with it
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_for(check: Any, timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def test_schedule_run_and_find_the_circuit(database: str, redis_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ATLAS_DATABASE_URL": database,
        "ATLAS_BROKER_URL": redis_url,
        "ATLAS_API_TOKEN": TOKEN,
        "ATLAS_DEVICE": "cpu",
        "ATLAS_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    logs = [server_log, worker_log]
    server = start(["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env, server_log)
    worker = start(["worker", "--queues", "cpu", "--concurrency", "1"], env, worker_log)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:

            def up() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, 60, "the API server", logs)
            refused = client.post("/jobs", json=JOB)
            assert refused.status_code == 401 and client.get("/jobs").json()["items"] == []
            created = client.post("/jobs", json=JOB, headers={"Authorization": f"Bearer {TOKEN}"})
            assert created.status_code == 201, created.text
            job_id = created.json()["job"]["id"]

            def finished() -> dict[str, Any] | None:
                job = client.get(f"/jobs/{job_id}").json()
                return job if job["status"] in ("done", "failed", "cancelled") else None

            job = wait_for(finished, 240, f"job {job_id} to finish", logs)
            assert job["status"] == "done", job
            assert job["progress"]["relations_done"] == 1 and len(job["circuit_ids"]) == 1
            circuit_id = job["circuit_ids"][0]

            listing = client.get("/circuits", params={"model": "tiny-llama"}).json()["items"]
            assert [c["id"] for c in listing] == [circuit_id]
            assert listing[0]["relation"] == "country_capital_city" and listing[0]["method"] == "eap"
            detail = client.get(f"/circuits/{circuit_id}").json()
            assert detail["n_edges"] == len(detail["edges"]) > 0
            recurring = client.get(
                "/components/recurring", params={"model": "tiny-llama", "min_count": 1}
            ).json()["components"]
            assert recurring and all(c["relations"] == ["country_capital_city"] for c in recurring)
            assert {c["component"] for c in recurring} == {
                n["node"] for n in detail["nodes"] if n["node"] not in ("input", "logits")
            }
            recut = client.get(f"/circuits/{circuit_id}/recut", params={"top_n": 30}).json()
            assert {e["edge"] for e in recut["edges"]} == {e["edge"] for e in detail["edges"]}

            again = client.post("/jobs", json=JOB, headers={"Authorization": f"Bearer {TOKEN}"})
            assert again.status_code == 200 and again.json()["job"] is None
            assert again.json()["existing_circuits"] == {"country_capital_city": circuit_id}
    finally:
        stop(worker)
        stop(server)
    assert TOKEN not in server_log.read_text(errors="replace")
