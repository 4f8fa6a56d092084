"""head roles, relation analyses (hallucination, in-context learning) and knowledge edits

The `edits` and `head_roles` tables of 0001 were room for these and never written: they are replaced by their
real shapes. New: `edit_components` (how an edit changed the edited fact's circuit, per head and MLP),
`analyses` (relation-level analyses keyed by their parameters) and `circuits.roles` (the thresholds and counts
of a circuit's head roles).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_head_roles_circuit_id"), table_name="head_roles")
    op.drop_table("head_roles")
    op.drop_index(op.f("ix_edits_model_id"), table_name="edits")
    op.drop_index(op.f("ix_edits_fact_id"), table_name="edits")
    op.drop_table("edits")
    op.create_table(
        "analyses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("relation_id", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("params_key", sa.String(length=64), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_analyses_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["relation_id"],
            ["relations.id"],
            name=op.f("fk_analyses_relation_id_relations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analyses")),
        sa.UniqueConstraint(
            "kind",
            "model_id",
            "relation_id",
            "params_key",
            name=op.f("uq_analyses_kind_model_id_relation_id_params_key"),
        ),
    )
    with op.batch_alter_table("analyses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_analyses_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_analyses_relation_id"), ["relation_id"], unique=False)

    op.create_table(
        "edits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("relation_id", sa.Integer(), nullable=False),
        sa.Column("fact_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("old_object", sa.Text(), nullable=False),
        sa.Column("new_object", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("edited_sha256", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.Column("update", sa.JSON(), nullable=False),
        sa.Column("lens", sa.JSON(), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.JSON(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["fact_id"], ["facts.id"], name=op.f("fk_edits_fact_id_facts"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_edits_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["relation_id"], ["relations.id"], name=op.f("fk_edits_relation_id_relations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edits")),
        sa.UniqueConstraint("model_id", "request_key", name=op.f("uq_edits_model_id_request_key")),
    )
    with op.batch_alter_table("edits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_edits_fact_id"), ["fact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_edits_method_layer"), ["method", "layer"], unique=False)
        batch_op.create_index(batch_op.f("ix_edits_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_edits_relation_id"), ["relation_id"], unique=False)

    op.create_table(
        "edit_components",
        sa.Column("edit_id", sa.Integer(), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("score_before", sa.Double(), nullable=True),
        sa.Column("score_after", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_edit_components_component_id_components"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["edit_id"], ["edits.id"], name=op.f("fk_edit_components_edit_id_edits"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("edit_id", "component_id", name=op.f("pk_edit_components")),
    )
    with op.batch_alter_table("edit_components", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_edit_components_component_id"), ["component_id"], unique=False)

    op.create_table(
        "head_roles",
        sa.Column("circuit_id", sa.Integer(), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("subject_attention", sa.Double(), nullable=False),
        sa.Column("relation_attention", sa.Double(), nullable=False),
        sa.Column("object_rank", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["circuit_id"],
            ["circuits.id"],
            name=op.f("fk_head_roles_circuit_id_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_head_roles_component_id_components"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("circuit_id", "component_id", name=op.f("pk_head_roles")),
    )
    with op.batch_alter_table("head_roles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_head_roles_role_component_id"), ["role", "component_id"], unique=False
        )

    with op.batch_alter_table("circuits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("roles", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Not a batch operation: on SQLite that rebuilds `circuits`, and dropping the old table would cascade to
    # every circuit's nodes, edges and evaluations (SQLite 3.35+ drops a column in place).
    op.execute("ALTER TABLE circuits DROP COLUMN roles")

    with op.batch_alter_table("head_roles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_head_roles_role_component_id"))

    op.drop_table("head_roles")
    with op.batch_alter_table("edit_components", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_edit_components_component_id"))

    op.drop_table("edit_components")
    with op.batch_alter_table("edits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_edits_relation_id"))
        batch_op.drop_index(batch_op.f("ix_edits_model_id"))
        batch_op.drop_index(batch_op.f("ix_edits_method_layer"))
        batch_op.drop_index(batch_op.f("ix_edits_fact_id"))

    op.drop_table("edits")
    with op.batch_alter_table("analyses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_analyses_relation_id"))
        batch_op.drop_index(batch_op.f("ix_analyses_model_id"))

    op.drop_table("analyses")
    op.create_table(
        "edits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("fact_id", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("new_object", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("weights_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["fact_id"], ["facts.id"], name=op.f("fk_edits_fact_id_facts"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_edits_model_id_models"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edits")),
    )
    op.create_index(op.f("ix_edits_fact_id"), "edits", ["fact_id"], unique=False)
    op.create_index(op.f("ix_edits_model_id"), "edits", ["model_id"], unique=False)
    op.create_table(
        "head_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("circuit_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["circuit_id"],
            ["circuits.id"],
            name=op.f("fk_head_roles_circuit_id_circuits"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_head_roles_component_id_components"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_head_roles")),
        sa.UniqueConstraint("component_id", "role", name=op.f("uq_head_roles_component_id_role")),
    )
    op.create_index(op.f("ix_head_roles_circuit_id"), "head_roles", ["circuit_id"], unique=False)
