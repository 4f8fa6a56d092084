"""A running job whose worker stopped (no heartbeat for ATLAS_JOB_STALE_SECONDS) is not stuck: POST
/jobs/{id}/cancel and `atlas jobs cancel` cancel it, and an identical POST /jobs re-queues it and sends it
again (the reaper's revive), on SQLite and PostgreSQL. A job running live can be neither."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_helpers import Catalogue, RecordingSender, auth
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import update

from atlas.cli import main
from atlas.db.jobs import claim_job
from atlas.db.models import Job
from atlas.db.store import transaction

JOB = {"model": "toy-a", "relations": ["name_gender"], "method": "eap", "seed": 77}


def _running(client: TestClient, catalogue: Catalogue, stale: bool, seed: int) -> int:
    """A job claimed by a worker, its last heartbeat now or two minutes ago."""
    created = client.post("/jobs", json={**JOB, "seed": seed}, headers=auth())
    assert created.status_code == 201, created.text
    job_id = int(created.json()["job"]["id"])
    assert claim_job(catalogue.engine, job_id, "worker-a", 60) == "claimed"
    if stale:
        with transaction(catalogue.engine, write=True) as session:
            beat = datetime.now(UTC) - timedelta(seconds=120)
            session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=beat))
    return job_id


def test_a_stalled_job_is_cancelled_and_a_live_one_is_409(client: TestClient, catalogue: Catalogue) -> None:
    live = _running(client, catalogue, stale=False, seed=1)
    refused = client.post(f"/jobs/{live}/cancel", headers=auth())
    assert refused.status_code == 409 and "no heartbeat for 60 s" in refused.json()["message"]
    stalled = _running(client, catalogue, stale=True, seed=2)
    cancelled = client.post(f"/jobs/{stalled}/cancel", headers=auth())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # Its request is free again: the same job posted now is a new one.
    again = client.post("/jobs", json={**JOB, "seed": 2}, headers=auth())
    assert again.status_code == 201 and again.json()["job"]["id"] != stalled


def test_atlas_jobs_cancel_cancels_a_stalled_job(client: TestClient, catalogue: Catalogue) -> None:
    stalled = _running(client, catalogue, stale=True, seed=3)
    live = _running(client, catalogue, stale=False, seed=4)
    runner = CliRunner()
    result = runner.invoke(main, ["jobs", "cancel", str(stalled), "--database-url", catalogue.url])
    assert result.exit_code == 0 and f"job {stalled} cancelled" in result.output, result.output
    result = runner.invoke(main, ["jobs", "cancel", str(live), "--database-url", catalogue.url])
    assert result.exit_code == 2 and "only a queued job or a running one" in result.output, result.output


def test_resubmitting_a_stalled_job_requeues_it(
    client: TestClient, catalogue: Catalogue, sender: RecordingSender
) -> None:
    stalled = _running(client, catalogue, stale=True, seed=5)
    live = _running(client, catalogue, stale=False, seed=6)
    before = list(sender.sent)
    answer = client.post("/jobs", json={**JOB, "seed": 5}, headers=auth())
    assert answer.status_code == 200 and answer.json()["job"]["id"] == stalled
    job = answer.json()["job"]
    assert (job["status"], job["worker"], job["requeues"]) == ("queued", None, 1)
    assert sender.sent == [*before, (stalled, "cpu")]
    answer = client.post("/jobs", json={**JOB, "seed": 6}, headers=auth())
    assert answer.status_code == 200 and answer.json()["job"]["status"] == "running"  # live: left alone
    assert sender.sent == [*before, (stalled, "cpu")] and answer.json()["job"]["id"] == live
