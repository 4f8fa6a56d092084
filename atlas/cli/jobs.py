"""`atlas jobs show|list|cancel`: queued and finished jobs, with their progress."""

from __future__ import annotations

from typing import Any

import click

from atlas.cli.common import catalogue_at, catalogue_errors, echo_json, url_option


@click.group("jobs")
def jobs_group() -> None:
    """Queued and finished jobs, with their progress."""


def _job_line(job: dict[str, Any]) -> str:
    p = job["progress"]
    request = job["request"]
    relations = ",".join(request.get("relations") or [request.get("relation", "")])
    facts = f" facts {p['facts_done']}/{p['facts_total']}" if p["facts_total"] else ""
    current = f" at {p['current_relation']}" if p["current_relation"] and job["status"] == "running" else ""
    stored = {"circuits": job["circuit_ids"], "edits": job["edit_ids"], "analyses": job["analysis_ids"]}
    outcome = "".join(f" {name} {ids}" for name, ids in stored.items() if ids)
    error = f" error: {job['error']}" if job["error"] else ""
    return (
        f"job {job['id']:>5} {job['status']:<9} {job['model']} [{relations}] relations "
        f"{p['relations_done']}/{p['relations_total']}{current}{facts}{outcome}{error}"
    )


@jobs_group.command("show")
@click.argument("job_id", type=int)
@url_option
@click.option("--json", "as_json", is_flag=True)
def jobs_show(job_id: int, url: str | None, as_json: bool) -> None:
    """One job: what was asked, its status and progress, what it stored (circuits, edits, analyses) or its
    error."""
    from atlas.db.jobs import get_job

    with catalogue_errors():
        job = get_job(catalogue_at(url), job_id)
    if as_json:
        echo_json(job)
    else:
        click.echo(_job_line(job))


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option(
    "--after", type=int, default=None, help="Show jobs older than this id (the previous page's next)."
)
@url_option
@click.option("--json", "as_json", is_flag=True)
def jobs_list(status: str | None, limit: int, after: int | None, url: str | None, as_json: bool) -> None:
    """Jobs, newest first."""
    from atlas.db.jobs import list_jobs

    with catalogue_errors():
        items, cursor = list_jobs(catalogue_at(url), status, after, limit)
    if as_json:
        echo_json({"items": items, "next": cursor})
        return
    for job in items:
        click.echo(_job_line(job))
    if cursor is not None:
        click.echo(f"more: --after {cursor}")


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
@url_option
def jobs_cancel(job_id: int, url: str | None) -> None:
    """Cancel a queued job, or a running one whose worker stopped (no heartbeat for ATLAS_JOB_STALE_SECONDS);
    a job running live cannot be cancelled."""
    from atlas.db.jobs import cancel_job
    from atlas.spec.config import get_settings

    with catalogue_errors():
        cancel_job(catalogue_at(url), job_id, get_settings().job_stale_seconds)
    click.echo(f"job {job_id} cancelled")
