"""`atlas worker` and `atlas serve`: the long-running processes, a Celery worker for queued jobs and the API
server."""

from __future__ import annotations

import os
import sys

import click

from atlas.cli.common import quiet_libraries


@click.command()
@click.option(
    "--queues", default=None, help="Comma-separated queues to take jobs from [gpu,cpu with a GPU, else cpu]."
)
@click.option("--concurrency", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: str | None, concurrency: int, loglevel: str) -> None:
    """Start a Celery worker that runs queued jobs (needs ATLAS_BROKER_URL and a shared ATLAS_DATABASE_URL).
    Each worker process loads a model once and keeps it; CUDA is used when the machine has it."""
    from atlas.spec.config import get_settings

    if not get_settings().broker_url:
        click.echo(
            "error: a worker needs a broker: set ATLAS_BROKER_URL (e.g. redis://127.0.0.1:6379/0)", err=True
        )
        sys.exit(2)
    quiet_libraries()
    from workers.app import app
    from workers.tasks import default_queues

    chosen = queues or default_queues()
    app.worker_main(
        [
            "worker",
            "--queues",
            chosen,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--hostname",
            f"atlas-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", "processes", type=int, default=1, show_default=True, help="Server processes.")
def serve(host: str, port: int, processes: int) -> None:
    """Serve the query API (OpenAPI at /openapi.json, docs at /docs) and the web pages."""
    from api.server import serve as run_server

    run_server(host, port, processes)
