"""jobs: queued extraction work and its progress

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("relations_total", sa.Integer(), nullable=False),
        sa.Column("relations_done", sa.Integer(), nullable=False),
        sa.Column("current_relation", sa.String(length=200), nullable=True),
        sa.Column("facts_done", sa.Integer(), nullable=False),
        sa.Column("facts_total", sa.Integer(), nullable=False),
        sa.Column("circuit_ids", sa.JSON(), nullable=False),
        sa.Column("edit_ids", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("work_seconds", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_request_key"), "jobs", ["request_key"], unique=False)
    op.create_index(op.f("ix_jobs_status_id"), "jobs", ["status", "id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_status_id"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_request_key"), table_name="jobs")
    op.drop_table("jobs")
