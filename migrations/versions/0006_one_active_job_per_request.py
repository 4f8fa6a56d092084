"""jobs: one active job per request (a unique index over the request keys of queued and running jobs), and
how often the reaper re-queued a job

Submission checked for an identical active job and then inserted, so concurrent identical submissions each
inserted one (8 concurrent posts made 7 or 8 jobs). The database now refuses a second queued or running job
with the same request key. Duplicates already there are resolved first: the oldest active job of a key
stays, the others are cancelled with a note (a worker that later receives one does nothing).

`jobs.requeues` counts the times a job without an owner (its worker gone, no message left for it) was
re-queued; past ATLAS_JOB_MAX_REQUEUES it is failed instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.Integer),
        sa.column("request_key", sa.String),
        sa.column("status", sa.String),
        sa.column("error", sa.Text),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    active = jobs.c.status.in_(("queued", "running"))
    oldest = sa.select(jobs.c.request_key, sa.func.min(jobs.c.id).label("keep")).where(active)
    oldest = oldest.group_by(jobs.c.request_key).having(sa.func.count() > 1)
    connection = op.get_bind()
    for key, keep in connection.execute(oldest).all():
        connection.execute(
            jobs.update()
            .where(jobs.c.request_key == key, active, jobs.c.id != keep)
            .values(
                status="cancelled",
                error=f"a duplicate of job {keep} (cancelled by migration 0006)",
                finished_at=sa.func.now(),
            )
        )
    op.add_column("jobs", sa.Column("requeues", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "uq_jobs_active_request_key",
        "jobs",
        ["request_key"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_active_request_key", table_name="jobs")
    op.execute("ALTER TABLE jobs DROP COLUMN requeues")  # SQLite 3.35+, as in 0003
