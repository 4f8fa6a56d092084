"""docker-compose.yml's services, run here without Docker: each atlas service's own command against the real
PostgreSQL and Redis (the compose hostnames replaced by local ones): the migration brings an empty database to
head, the API answers, and the worker (listening on both queues, as in the compose file) takes a job sent to
the "gpu" queue and one sent to the "cpu" queue and runs each to the end."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from services import ATLAS, WorkerProcess, pg_database, require_pg, require_redis, wait_for
from sqlalchemy import Engine, inspect

from atlas.core.discover import DiscoveryParams  # re-exported on every layout of the params
from atlas.db.engine import make_engine
from atlas.db.jobs import get_job
from atlas.db.store import import_relations
from atlas.spec.corpus import bundled_corpus_path, load_corpus
from atlas.tasks.discover import DiscoveryRequest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]

pytestmark = pytest.mark.integration


def test_compose_file_wires_the_deployment() -> None:
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(SERVICES)
    assert "healthcheck" in SERVICES["postgres"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    env = SERVICES["api"]["environment"]
    assert env["ATLAS_DATABASE_URL"].startswith("postgresql://") and env["ATLAS_BROKER_URL"].startswith(
        "redis://"
    )
    assert (REPO / SERVICES["api"]["build"]["dockerfile"]).is_file()


def _local(command: list[str]) -> list[str]:
    assert command[0] == "atlas"
    return [ATLAS, *command[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A quick job for each queue (the tiny random model, plain EAP, 4 facts).
QUICK = DiscoveryParams(method="eap", max_facts=4, curve=False, known_only=False)
QUEUE_JOBS = {"gpu": "country_language", "cpu": "country_capital_city"}


def _send(
    engine: Engine, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, relation: str, queue: str
) -> int:
    """Record a job and send it to `queue` as `atlas discover --enqueue` does, on this test's broker."""
    for key in ("ATLAS_DATABASE_URL", "ATLAS_BROKER_URL"):
        monkeypatch.setenv(key, env[key])
    from atlas.spec.config import get_settings

    get_settings.cache_clear()
    import workers.app
    from workers.enqueue import submit_and_send

    monkeypatch.setattr(workers.app.app.conf, "broker_url", env["ATLAS_BROKER_URL"])
    submission = submit_and_send(engine, DiscoveryRequest("tiny-llama", (relation,), QUICK), queue)
    assert submission.created and submission.job_id is not None
    return submission.job_id


def test_each_service_command_runs_against_real_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = require_pg()
    broker = require_redis(14)
    with pg_database(user) as url:
        env = {**os.environ, "ATLAS_DATABASE_URL": url, "ATLAS_BROKER_URL": broker, "ATLAS_API_TOKEN": "t"}
        # migrate: one shot, exits 0, the database is at head.
        done = subprocess.run(_local(SERVICES["migrate"]["command"]), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        engine = make_engine(url)
        with engine.connect() as connection:
            assert {"circuits", "jobs", "alembic_version"} <= set(inspect(connection).get_table_names())

        # api: serves the OpenAPI document (on a free port instead of 8000).
        command = _local(SERVICES["api"]["command"])
        port = _free_port()
        command[command.index("--port") + 1] = str(port)
        command[command.index("--host") + 1] = "127.0.0.1"
        api = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
                    break
                except httpx.TransportError:
                    assert api.poll() is None, api.stderr.read().decode() if api.stderr else ""
                    assert time.monotonic() < deadline, "the API did not start"
                    time.sleep(0.5)
            assert response.status_code == 200 and "/jobs" in response.json()["paths"]
        finally:
            api.terminate()
            api.wait(timeout=30)

        # worker: the compose command (both queues) takes a job sent to each queue and runs it to the end.
        queues = SERVICES["worker"]["command"][SERVICES["worker"]["command"].index("--queues") + 1]
        assert queues.split(",") == ["gpu", "cpu"]
        import_relations(engine, load_corpus(bundled_corpus_path()).values())
        jobs = {
            queue: _send(engine, env, monkeypatch, relation, queue) for queue, relation in QUEUE_JOBS.items()
        }
        worker = WorkerProcess(
            {
                "ATLAS_DATABASE_URL": url,
                "ATLAS_BROKER_URL": broker,
                "ATLAS_DEVICE": "cpu",
                "ATLAS_THREADS": "1",
            },
            tmp_path / "worker.log",
            queues=queues,
        )
        try:
            for queue, job_id in jobs.items():
                wait_for(
                    lambda job_id=job_id: get_job(engine, job_id)["status"] in ("done", "failed"),
                    240,
                    f"the job sent to the {queue} queue",
                    worker.output,
                )
        finally:
            worker.stop()
        for queue, job_id in jobs.items():
            job = get_job(engine, job_id)
            assert job["status"] == "done", (queue, job["error"])
            assert len(job["circuit_ids"]) == 1, queue
        engine.dispose()
