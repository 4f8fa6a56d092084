"""runs keyed by a hash of their parameters; faithful circuits, stability and the recurrence null

Runs: `params` (the canonical parameters) and `params_key` (their sha256) replace the 17-column unique key,
so a new parameter needs no column; `method` takes names of any length (64). Runs stored before keep their
columns and get `params` rebuilt from them (the canonicalization is restated here, frozen: migrations never
import the project). Circuits: whether the faithfulness target was met and the size search, the template
used, the bootstrap, and the null inclusion probabilities of the recurrence query. Nodes and edges: their
bootstrap stability. Evaluations: top-1 accuracy of the original model, the circuit and the random circuit.

Downgrade drops what 0004 cannot hold: runs sized by faithfulness, and runs whose method name is longer than
16 characters, go with their circuits.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = (
    "model_id", "relation_id", "method", "ig_steps", "metric", "level", "selection", "top_n", "threshold",
    "ablation", "template", "seed", "max_facts", "heldout_fraction", "known_only", "curve", "corpus_hash",
    "code_version",
)  # fmt: skip
NEW_KEY = ("model_id", "relation_id", "params_key", "corpus_hash", "code_version")


def canonical(row: Any) -> dict[str, Any]:
    """atlas.spec.params.DiscoveryParams.canonical for a run of 0004's columns (no bootstrap then)."""
    out: dict[str, Any] = {
        "method": row.method,
        "metric": row.metric,
        "level": row.level,
        "ablation": row.ablation,
        "selection": row.selection,
        "template": row.template,
        "seed": row.seed,
        "max_facts": row.max_facts,
        "heldout_fraction": float(row.heldout_fraction),
        "known_only": bool(row.known_only),
        "curve": bool(row.curve),
        "bootstrap": 0,
    }
    if row.method != "eap":
        out["ig_steps"] = row.ig_steps
    if row.selection == "threshold":
        out["threshold"] = float(row.threshold)
    else:
        out["top_n"] = row.top_n
    return out


def key_of(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("params_key", sa.String(length=64), nullable=True))
    runs = sa.table(
        "runs",
        *(sa.column(name) for name in OLD_KEY if name not in ("model_id", "relation_id")),
        sa.column("id"),
        sa.column("params", sa.JSON()),
        sa.column("params_key"),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(runs)).all():
        params = canonical(row)
        connection.execute(
            runs.update().where(runs.c.id == row.id).values(params=params, params_key=key_of(params))
        )
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.drop_constraint("uq_runs_params", type_="unique")
        batch.alter_column("params", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("params_key", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("method", existing_type=sa.String(length=16), type_=sa.String(length=64))
        batch.create_unique_constraint(
            op.f("uq_runs_model_id_relation_id_params_key_corpus_hash_code_version"), NEW_KEY
        )
        batch.create_index(op.f("ix_runs_method_level"), ["method", "level"])
    op.add_column("circuits", sa.Column("target_met", sa.Boolean(), nullable=True))
    op.add_column("circuits", sa.Column("search", sa.JSON(), nullable=True))
    op.add_column("circuits", sa.Column("template", sa.JSON(), nullable=True))
    op.add_column("circuits", sa.Column("stability", sa.JSON(), nullable=True))
    op.add_column("circuits", sa.Column("null_inclusion", sa.LargeBinary(), nullable=True))
    op.add_column("circuits", sa.Column("null_samples", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_circuits_target_met"), "circuits", ["target_met"])
    op.add_column("circuit_nodes", sa.Column("stability", sa.Double(), nullable=True))
    op.add_column("circuit_edges", sa.Column("stability", sa.Double(), nullable=True))
    for column in ("top1_original", "top1_circuit", "top1_random"):
        op.add_column("evaluations", sa.Column(column, sa.Double(), nullable=True))


def downgrade() -> None:
    for column in ("top1_random", "top1_circuit", "top1_original"):
        op.drop_column("evaluations", column)
    op.drop_column("circuit_edges", "stability")
    op.drop_column("circuit_nodes", "stability")
    op.drop_index(op.f("ix_circuits_target_met"), table_name="circuits")
    for column in ("null_samples", "null_inclusion", "stability", "template", "search", "target_met"):
        op.drop_column("circuits", column)
    runs = sa.table("runs", sa.column("id"), sa.column("selection"), sa.column("method"))
    doomed = sa.select(runs.c.id).where(
        (runs.c.selection == "faithfulness") | (sa.func.length(runs.c.method) > 16)
    )
    circuits = sa.table("circuits", sa.column("id"), sa.column("run_id"))
    connection = op.get_bind()
    # Circuits first: on SQLite the batch copy below runs with foreign keys off, so no cascade cleans up.
    for child in ("circuit_nodes", "circuit_edges", "evaluations", "head_roles"):
        table = sa.table(child, sa.column("circuit_id"))
        connection.execute(
            table.delete().where(
                table.c.circuit_id.in_(sa.select(circuits.c.id).where(circuits.c.run_id.in_(doomed)))
            )
        )
    connection.execute(circuits.delete().where(circuits.c.run_id.in_(doomed)))
    connection.execute(runs.delete().where(runs.c.id.in_(doomed)))
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.drop_index(op.f("ix_runs_method_level"))
        batch.drop_constraint(
            op.f("uq_runs_model_id_relation_id_params_key_corpus_hash_code_version"), type_="unique"
        )
        batch.alter_column("method", existing_type=sa.String(length=64), type_=sa.String(length=16))
        batch.create_unique_constraint("uq_runs_params", OLD_KEY)
        batch.drop_column("params_key")
        batch.drop_column("params")
