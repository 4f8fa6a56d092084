"""circuit records: each circuit's GET /circuits/{id} body, precomputed when the circuit is stored

One column on `circuits`: `record_json`, the UTF-8 JSON document the API answers for the circuit (its summary,
run, evaluations, nodes, edges and reproducibility record; atlas.db.records), written in the circuit's own
transaction, so a read is one row and no object graph. Circuits stored before this revision keep NULL here
(a migration does not import the code that builds the record): the API builds their record on read, and
`atlas.db.records.fill_missing` (`atlas db fill-records`) stores it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("circuits", sa.Column("record_json", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("circuits", "record_json")
