"""circuit member annotations: each member's bootstrap stability and head role, aligned with `node_set`

Two columns on `circuits`, one value per entry of `node_set` (the circuit's heads and MLPs, sorted writer
indices): `member_stability`, little-endian float32, the share of bootstrap resamples keeping the member (NaN
without a bootstrap); `member_roles`, int8, the head's role as an index into atlas.db.models.ROLES (mover,
relation, mix, other), -1 for an MLP or a head without one. The recurring-components query then reads one row
per circuit for its mean stability and roles too, not the circuit's node and role rows. Circuits stored before
this revision keep NULL here and are read from `circuit_nodes` and `head_roles` (atlas.db.recurrence).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("circuits", sa.Column("member_stability", sa.LargeBinary(), nullable=True))
    op.add_column("circuits", sa.Column("member_roles", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("circuits", "member_roles")
    op.drop_column("circuits", "member_stability")
