"""the catalogue schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("architecture", sa.String(length=200), nullable=False),
        sa.Column("n_layers", sa.Integer(), nullable=False),
        sa.Column("n_heads", sa.Integer(), nullable=False),
        sa.Column("d_model", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=32), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint(
            "name", "architecture", "n_layers", "n_heads", "weights_sha256", "dtype", name="uq_models_key"
        ),
    )
    op.create_table(
        "relations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("range", sa.Text(), nullable=False),
        sa.Column("symmetric", sa.Boolean(), nullable=False),
        sa.Column("prompt_templates", sa.JSON(), nullable=False),
        sa.Column("prompt_templates_zs", sa.JSON(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relations")),
        sa.UniqueConstraint("name", name=op.f("uq_relations_name")),
    )
    op.create_index(op.f("ix_relations_category"), "relations", ["category"], unique=False)
    op.create_table(
        "components",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=True),
        sa.Column("head", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_components_model_id_models"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_components")),
        sa.UniqueConstraint("model_id", "name", name=op.f("uq_components_model_id_name")),
    )
    op.create_table(
        "facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("relation_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["relation_id"], ["relations.id"], name=op.f("fk_facts_relation_id_relations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_facts")),
        sa.UniqueConstraint(
            "relation_id", "subject", "object", name=op.f("uq_facts_relation_id_subject_object")
        ),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("relation_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("ig_steps", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("selection", sa.String(length=16), nullable=False),
        sa.Column("top_n", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("ablation", sa.String(length=16), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("max_facts", sa.Integer(), nullable=False),
        sa.Column("heldout_fraction", sa.Double(), nullable=False),
        sa.Column("known_only", sa.Boolean(), nullable=False),
        sa.Column("curve", sa.Boolean(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("corpus_hash", sa.String(length=64), nullable=False),
        sa.Column("code_version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("unpaired_facts", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_runs_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["relation_id"], ["relations.id"], name=op.f("fk_runs_relation_id_relations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint(
            "model_id",
            "relation_id",
            "method",
            "ig_steps",
            "metric",
            "level",
            "selection",
            "top_n",
            "threshold",
            "ablation",
            "template",
            "seed",
            "max_facts",
            "heldout_fraction",
            "known_only",
            "curve",
            "corpus_hash",
            "code_version",
            name="uq_runs_params",
        ),
    )
    op.create_index(op.f("ix_runs_model_id"), "runs", ["model_id"], unique=False)
    op.create_index(op.f("ix_runs_relation_id"), "runs", ["relation_id"], unique=False)
    op.create_table(
        "circuits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("n_nodes", sa.Integer(), nullable=False),
        sa.Column("n_edges", sa.Integer(), nullable=False),
        sa.Column("n_random_edges", sa.Integer(), nullable=False),
        sa.Column("layout", sa.String(length=16), nullable=False),
        sa.Column("score_rows", sa.Integer(), nullable=False),
        sa.Column("score_cols", sa.Integer(), nullable=False),
        sa.Column("score_dtype", sa.String(length=16), nullable=False),
        sa.Column("scores", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_circuits_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_circuits")),
        sa.UniqueConstraint("run_id", name=op.f("uq_circuits_run_id")),
    )
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
        "circuit_edges",
        sa.Column("circuit_id", sa.Integer(), nullable=False),
        sa.Column("writer_id", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("port", sa.String(length=1), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("in_circuit", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_id"],
            ["circuits.id"],
            name=op.f("fk_circuit_edges_circuit_id_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reader_id"],
            ["components.id"],
            name=op.f("fk_circuit_edges_reader_id_components"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["writer_id"],
            ["components.id"],
            name=op.f("fk_circuit_edges_writer_id_components"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "circuit_id", "writer_id", "reader_id", "port", name=op.f("pk_circuit_edges")
        ),
    )
    op.create_index(
        op.f("ix_circuit_edges_writer_id_reader_id_port"),
        "circuit_edges",
        ["writer_id", "reader_id", "port"],
        unique=False,
    )
    op.create_table(
        "circuit_nodes",
        sa.Column("circuit_id", sa.Integer(), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("in_circuit", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_id"],
            ["circuits.id"],
            name=op.f("fk_circuit_nodes_circuit_id_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_circuit_nodes_component_id_components"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("circuit_id", "component_id", name=op.f("pk_circuit_nodes")),
    )
    op.create_index(op.f("ix_circuit_nodes_component_id"), "circuit_nodes", ["component_id"], unique=False)
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("circuit_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("n_facts", sa.Integer(), nullable=False),
        sa.Column("hit_original", sa.Double(), nullable=False),
        sa.Column("hit_circuit", sa.Double(), nullable=False),
        sa.Column("hit_random", sa.Double(), nullable=False),
        sa.Column("metric_full", sa.Double(), nullable=True),
        sa.Column("metric_empty", sa.Double(), nullable=True),
        sa.Column("metric_circuit", sa.Double(), nullable=True),
        sa.Column("metric_random", sa.Double(), nullable=True),
        sa.Column("faithfulness", sa.Double(), nullable=True),
        sa.Column("faithfulness_random", sa.Double(), nullable=True),
        sa.Column("curve_area", sa.Double(), nullable=True),
        sa.Column("curve", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["circuit_id"],
            ["circuits.id"],
            name=op.f("fk_evaluations_circuit_id_circuits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint("circuit_id", "split", name=op.f("uq_evaluations_circuit_id_split")),
    )
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


def downgrade() -> None:
    op.drop_index(op.f("ix_head_roles_circuit_id"), table_name="head_roles")
    op.drop_table("head_roles")
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_circuit_nodes_component_id"), table_name="circuit_nodes")
    op.drop_table("circuit_nodes")
    op.drop_index(op.f("ix_circuit_edges_writer_id_reader_id_port"), table_name="circuit_edges")
    op.drop_table("circuit_edges")
    op.drop_index(op.f("ix_edits_model_id"), table_name="edits")
    op.drop_index(op.f("ix_edits_fact_id"), table_name="edits")
    op.drop_table("edits")
    op.drop_table("circuits")
    op.drop_index(op.f("ix_runs_relation_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_model_id"), table_name="runs")
    op.drop_table("runs")
    op.drop_table("facts")
    op.drop_table("components")
    op.drop_index(op.f("ix_relations_category"), table_name="relations")
    op.drop_table("relations")
    op.drop_table("models")
