"""docker-compose.yml's services, run here without Docker: each atlas service's own command against the real
PostgreSQL and Redis (the compose hostnames replaced by local ones): the migration brings an empty database to
head, the API answers, the worker connects to the broker and takes a job."""

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
from sqlalchemy import inspect

from atlas.db.engine import make_engine

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


def test_each_service_command_runs_against_real_services(tmp_path: Path) -> None:
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
        engine.dispose()

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

        # worker: the compose command (both queues) connects and is ready for jobs.
        queues = SERVICES["worker"]["command"][SERVICES["worker"]["command"].index("--queues") + 1]
        worker = WorkerProcess(
            {"ATLAS_DATABASE_URL": url, "ATLAS_BROKER_URL": broker}, tmp_path / "worker.log", queues=queues
        )
        try:
            wait_for(lambda: "ready" in worker.output(), 120, "the worker to be ready", worker.output)
            assert "gpu" in worker.output() and "cpu" in worker.output()  # it listens on both queues
        finally:
            worker.stop()
