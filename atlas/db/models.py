"""The catalogue's tables as SQLAlchemy 2 typed models.

Every entity has a natural unique key besides its surrogate id: a model is its name, architecture, shape,
dtype and weights hash; a component is its model and name; a relation its name; a fact its relation, subject
and object; a run every parameter that changes its result (so a repeated run is found, not redone). The schema
is created by the Alembic migrations under `migrations/`, never by `create_all` (except in tests of the
models themselves).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Component kinds and run states.
KINDS = ("input", "head", "mlp", "logits")
STATUSES = ("running", "done", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, float: Double}


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint(
            "name", "architecture", "n_layers", "n_heads", "weights_sha256", "dtype", name="uq_models_key"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(200))
    n_layers: Mapped[int]
    n_heads: Mapped[int]
    d_model: Mapped[int]
    dtype: Mapped[str] = mapped_column(String(32))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    components: Mapped[list[Component]] = relationship(back_populates="model")


class Component(Base):
    """A node of a model's graph: `input`, a head `a{L}.h{H}`, an MLP `m{L}`, or `logits`."""

    __tablename__ = "components"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    layer: Mapped[int | None]
    head: Mapped[int | None]

    model: Mapped[Model] = relationship(back_populates="components")


class Relation(Base):
    __tablename__ = "relations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32), index=True)
    domain: Mapped[str] = mapped_column(Text)
    range: Mapped[str] = mapped_column(Text)
    symmetric: Mapped[bool] = mapped_column(Boolean)
    prompt_templates: Mapped[list[Any]]
    prompt_templates_zs: Mapped[list[Any]]
    content_sha256: Mapped[str] = mapped_column(String(64))  # atlas.core.corpus.corpus_hash([relation])
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Fact(Base):
    __tablename__ = "facts"
    __table_args__ = (UniqueConstraint("relation_id", "subject", "object"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(Text)
    object: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One discovery job. Its parameters form the unique key (NOT NULL, normalized: `top_n` is 0 under a
    threshold and `threshold` 0.0 under top-n; `template` is '' for the default, '#i' for an index, else the
    template itself; `ig_steps` is 1 for plain EAP)."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint(
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

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    ig_steps: Mapped[int]
    metric: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(8))
    selection: Mapped[str] = mapped_column(String(16))  # "top_n" or "threshold"
    top_n: Mapped[int]
    threshold: Mapped[float]
    ablation: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(Text)
    seed: Mapped[int]
    max_facts: Mapped[int]
    heldout_fraction: Mapped[float]
    known_only: Mapped[bool] = mapped_column(Boolean)
    curve: Mapped[bool] = mapped_column(Boolean)
    batch_size: Mapped[int]  # not in the key: it changes only the summation order
    corpus_hash: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    facts: Mapped[dict[str, Any] | None]  # FactCounts
    unpaired_facts: Mapped[list[Any] | None]
    seconds: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship()
    relation: Mapped[Relation] = relationship()
    circuit: Mapped[Circuit | None] = relationship(back_populates="run")


class Circuit(Base):
    """A run's result. `scores` holds the full score matrix compactly: little-endian `score_dtype` values of
    the `[score_rows, score_cols]` matrix at the graph's valid edges in row-major order (`layout`
    "valid_edges"), or of the node scores `[score_rows]` (`layout` "nodes", node-level circuits; score_cols
    is 0), so a circuit can be re-cut at another size without recomputing."""

    __tablename__ = "circuits"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    level: Mapped[str] = mapped_column(String(8))
    n_nodes: Mapped[int]
    n_edges: Mapped[int]
    n_random_edges: Mapped[int]
    layout: Mapped[str] = mapped_column(String(16))
    score_rows: Mapped[int]
    score_cols: Mapped[int]
    score_dtype: Mapped[str] = mapped_column(String(16))
    scores: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[Run] = relationship(back_populates="circuit")


class CircuitNode(Base):
    """Every node of the model's graph for a circuit: its attribution score (for edge circuits the sum of
    its outgoing edges' scores, the first-order effect of patching the node; None for logits) and whether
    the circuit contains it."""

    __tablename__ = "circuit_nodes"

    circuit_id: Mapped[int] = mapped_column(ForeignKey("circuits.id", ondelete="CASCADE"), primary_key=True)
    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    score: Mapped[float | None]
    in_circuit: Mapped[bool] = mapped_column(Boolean)


class CircuitEdge(Base):
    """The edges selected by score (top-n or threshold) before pruning, and the circuit's own edges: each
    with its score and whether it survived pruning into the circuit. `port` is the reader's input: q, k, v
    for a head, '' for an MLP or logits. Node-level circuits store their induced edges without scores."""

    __tablename__ = "circuit_edges"
    __table_args__ = (Index(None, "writer_id", "reader_id", "port"),)

    circuit_id: Mapped[int] = mapped_column(ForeignKey("circuits.id", ondelete="CASCADE"), primary_key=True)
    writer_id: Mapped[int] = mapped_column(ForeignKey("components.id", ondelete="CASCADE"), primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("components.id", ondelete="CASCADE"), primary_key=True)
    port: Mapped[str] = mapped_column(String(1), primary_key=True)
    score: Mapped[float | None]
    in_circuit: Mapped[bool] = mapped_column(Boolean)


class Evaluation(Base):
    """Hit@10 and faithfulness of a circuit on one split ("discovery" or "heldout"); the faithfulness curve
    (points of percent, n_edges, faithfulness) on the discovery split. NaN faithfulness is stored as NULL."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("circuit_id", "split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    circuit_id: Mapped[int] = mapped_column(ForeignKey("circuits.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(16))
    n_facts: Mapped[int]
    hit_original: Mapped[float]
    hit_circuit: Mapped[float]
    hit_random: Mapped[float]
    metric_full: Mapped[float | None]
    metric_empty: Mapped[float | None]
    metric_circuit: Mapped[float | None]
    metric_random: Mapped[float | None]
    faithfulness: Mapped[float | None]
    faithfulness_random: Mapped[float | None]
    curve_area: Mapped[float | None]
    curve: Mapped[list[Any] | None]


class Edit(Base):
    """Room for knowledge edits (ROME, MEMIT, ...) of a model's fact; not written yet."""

    __tablename__ = "edits"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    fact_id: Mapped[int | None] = mapped_column(ForeignKey("facts.id", ondelete="SET NULL"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    new_object: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any] | None]
    weights_sha256: Mapped[str | None] = mapped_column(String(64))  # of the edited model
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HeadRole(Base):
    """Room for roles of heads and MLPs (mover, relation, mixture heads, ...); not written yet."""

    __tablename__ = "head_roles"
    __table_args__ = (UniqueConstraint("component_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    component_id: Mapped[int] = mapped_column(ForeignKey("components.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any] | None]
    circuit_id: Mapped[int | None] = mapped_column(ForeignKey("circuits.id", ondelete="SET NULL"), index=True)
