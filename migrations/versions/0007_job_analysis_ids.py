"""jobs: the analyses a job stored

Analyses can be queued (job kind `analysis`, atlas.tasks.analysis); the stored analysis is reachable from its
job as circuits and edits are, through `jobs.analysis_ids`. Existing jobs get an empty list.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("analysis_ids", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
    )


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN analysis_ids")  # SQLite 3.35+, as in 0003
