"""`--enqueue` for the commands that can queue their work (`atlas discover`, `atlas edit`, `atlas analyze
...`): the relations asked about stored in the catalogue, the job recorded and its id sent to the workers
(workers.enqueue.submit_and_send, as the API's POST routes do), and one line (or JSON) saying what happened.
Imports no torch."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from atlas.db import CatalogueError
from atlas.spec.json_safe import finite

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from atlas.spec.corpus import Relation
    from atlas.tasks.base import JobRequest


def enqueue(
    request: JobRequest,
    queue: str,
    as_json: bool,
    relations: Iterable[Relation] = (),
    engine: Engine | None = None,
) -> None:
    """Queue `request` on `queue` for the workers (needs ATLAS_BROKER_URL), after storing `relations` in the
    catalogue (`engine`; default ATLAS_DATABASE_URL's); print the job, or what the catalogue already has."""
    from atlas.spec.config import get_settings

    if not get_settings().broker_url:
        raise CatalogueError("--enqueue needs a broker: set ATLAS_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    from atlas.db.store import import_relations
    from atlas.jobs import catalogue_engine
    from workers.enqueue import submit_and_send

    engine = engine or catalogue_engine()
    import_relations(engine, list(relations))
    submission = submit_and_send(engine, request, queue)
    if as_json:
        click.echo(json.dumps(finite(submission.to_dict())))
    elif submission.job_id is None:
        click.echo(f"already in the catalogue: {submission.text} (nothing queued)")
    elif submission.created:
        click.echo(f"queued job {submission.job_id} on {queue} (`atlas jobs show {submission.job_id}`)")
    else:
        click.echo(f"job {submission.job_id}: the same job is already queued or running")
