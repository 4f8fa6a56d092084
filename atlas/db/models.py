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
    text,
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
# Job states: queued -> running -> done | failed; a queued job may be cancelled.
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_JOB = "status IN ('queued', 'running')"  # at most one such job per request key
JOB_KINDS = ("discover", "edit")
# Head roles (atlas.core.roles.ROLES; restated so the catalogue does not import torch).
ROLES = ("mover", "relation", "mix", "other")
# Byte layouts of the binary columns of `circuits` (atlas.db.store writes them, the read side decodes them).
SCORE_DTYPE = "<f4"  # little-endian float32: exact for the float32 scores discovery produces
MEMBER_DTYPE = "<i4"  # Circuit.node_set / edge_set: little-endian int32 graph indices
MEMBER_STABILITY_DTYPE = "<f4"  # Circuit.member_stability: float32 per node_set entry
MEMBER_ROLE_DTYPE = "i1"  # Circuit.member_roles: int8 index into ROLES per node_set entry, -1 none


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
    content_sha256: Mapped[str] = mapped_column(String(64))  # atlas.spec.corpus.corpus_hash([relation])
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
    """One discovery job. Its key is its model, relation, corpus hash, code version and `params_key`, the
    sha256 of its canonical parameters (`params`, atlas.spec.params.DiscoveryParams.canonical): a parameter
    added later needs no column and no migration. The columns users filter on are kept beside it (NOT NULL,
    normalized: `top_n` is 0 and `threshold` 0.0 where the rule does not use them; `template` is '' for the
    default, '#i' for an index, else the template itself; `ig_steps` is 1 for methods without steps)."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("model_id", "relation_id", "params_key", "corpus_hash", "code_version"),
        Index(None, "method", "level"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"), index=True)
    params: Mapped[dict[str, Any]]
    params_key: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(64))
    ig_steps: Mapped[int]
    metric: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(8))
    selection: Mapped[str] = mapped_column(String(16))  # "faithfulness", "top_n" or "threshold"
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
    # The circuit's members as sorted little-endian int32 indices of atlas.core.graph.Graph: the writer
    # indices of its heads and MLPs, and the flat indices (writer * n_readers + reader) of its edges; the same
    # sets as its in-circuit rows of circuit_nodes and circuit_edges, for the overlap matrix. Written with the
    # circuit (NULL only in a row written by hand; migration 0003 filled the circuits stored before it).
    node_set: Mapped[bytes | None] = mapped_column(LargeBinary)
    edge_set: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Head roles: the thresholds, the number of prompts and the counts per role (rows in head_roles).
    roles: Mapped[dict[str, Any] | None]
    # Size by faithfulness: whether the target was met (NULL for a fixed size), and the search (target, cap,
    # n_top, size, faithfulness and every size evaluated).
    target_met: Mapped[bool | None] = mapped_column(Boolean, index=True)
    search: Mapped[dict[str, Any] | None]
    # The template the run used (and for `template auto`, the facts known under each candidate).
    template: Mapped[dict[str, Any] | None]
    # Bootstrap of the member's stability: resamples (members' shares are in circuit_nodes/circuit_edges).
    stability: Mapped[dict[str, Any] | None]
    # The null for recurrence: each writer's probability to be a component of a random connected circuit of
    # this circuit's size in the same graph (little-endian float32 `[n_writers]`), from `null_samples` draws.
    null_inclusion: Mapped[bytes | None] = mapped_column(LargeBinary)
    null_samples: Mapped[int | None]
    # Per entry of node_set: the member's bootstrap stability (little-endian float32, NaN without a
    # bootstrap) and its head role (int8 index into ROLES, -1 for an MLP or a head without one). NULL in
    # circuits stored before migration 0008 (read from circuit_nodes and head_roles then).
    member_stability: Mapped[bytes | None] = mapped_column(LargeBinary)
    member_roles: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The circuit's record: the UTF-8 JSON body of GET /circuits/{id} (atlas.db.records), written in the
    # circuit's transaction so the API serves it without building it. NULL in circuits stored before
    # migration 0009 or written by hand (built on read then). Deferred: only the API's record read wants it.
    record_json: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

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
    # Share of bootstrap resamples whose circuit holds this node (members only; NULL without a bootstrap).
    stability: Mapped[float | None]


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
    stability: Mapped[float | None]  # as CircuitNode.stability


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
    top1_original: Mapped[float | None]
    top1_circuit: Mapped[float | None]
    top1_random: Mapped[float | None]
    faithfulness: Mapped[float | None]
    faithfulness_random: Mapped[float | None]
    curve_area: Mapped[float | None]
    curve: Mapped[list[Any] | None]


class Edit(Base):
    """A knowledge edit (ROME, FT-M, ...) of one fact in a model, and what it did: the outcome metrics
    (efficacy, generalization, locality, the old object's fate), the logit lens of the new object in the
    edited model, and the change of the edited fact's circuit (edges in `diff`, heads and MLPs in
    `edit_components`). `request_key` is the sha256 of everything that changes the result, so a repeated edit
    is found, not redone."""

    __tablename__ = "edits"
    __table_args__ = (UniqueConstraint("model_id", "request_key"), Index(None, "method", "layer"))

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"), index=True)
    fact_id: Mapped[int | None] = mapped_column(ForeignKey("facts.id", ondelete="SET NULL"), index=True)
    subject: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    old_object: Mapped[str] = mapped_column(Text)
    new_object: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(32))
    layer: Mapped[int]
    params: Mapped[dict[str, Any]]
    request_key: Mapped[str] = mapped_column(String(64))
    edited_sha256: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[dict[str, Any]]
    update: Mapped[dict[str, Any]]  # the weight change: norms, steps, losses, method details
    lens: Mapped[list[Any] | None]  # logit lens of the new object in the edited model, per component
    diff: Mapped[dict[str, Any] | None]  # the edited fact's circuit before vs after
    seconds: Mapped[dict[str, Any] | None]
    code_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EditComponent(Base):
    """A head or MLP of the edited fact's circuit before or after an edit: gained, lost or kept, with its
    score before and after (None where it was not scored)."""

    __tablename__ = "edit_components"

    edit_id: Mapped[int] = mapped_column(ForeignKey("edits.id", ondelete="CASCADE"), primary_key=True)
    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    change: Mapped[str] = mapped_column(String(8))  # "gained", "lost", "kept"
    score_before: Mapped[float | None]
    score_after: Mapped[float | None]


class HeadRole(Base):
    """The role of a head in a circuit, from its attention at the last position: `mover` (to the subject),
    `relation` (to the relation words), `mix` (both) or `other`; with the attention masses and the rank of the
    object when the head's output is read through the unembedding (logit lens). The thresholds are stored
    with the circuit (`circuits.roles`)."""

    __tablename__ = "head_roles"
    __table_args__ = (Index(None, "role", "component_id"),)

    circuit_id: Mapped[int] = mapped_column(ForeignKey("circuits.id", ondelete="CASCADE"), primary_key=True)
    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    subject_attention: Mapped[float]
    relation_attention: Mapped[float]
    object_rank: Mapped[int | None]


class Analysis(Base):
    """A relation-level analysis of a model (`hallucination`, `icl`) and its result, keyed by its parameters
    so a repeated analysis is found, not redone."""

    __tablename__ = "analyses"
    __table_args__ = (UniqueConstraint("kind", "model_id", "relation_id", "params_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"), index=True)
    params: Mapped[dict[str, Any]]
    params_key: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]]
    seconds: Mapped[float | None]
    code_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """A queued unit of work ("circuits of these relations in this model, with this method") and its
    progress. Job state lives here, not in a Celery result backend: any worker on any machine that shares
    the database can claim it, and the API reads it. `request` holds what was asked (kind-specific JSON);
    `request_key` is its sha256, so an identical job already queued or running is found, not queued twice."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "status", "id"),
        # One active job per request, enforced by the database (migration 0006): concurrent identical
        # submissions cannot both insert one.
        Index(
            "uq_jobs_active_request_key",
            "request_key",
            unique=True,
            postgresql_where=text(ACTIVE_JOB),
            sqlite_where=text(ACTIVE_JOB),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]]
    request_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    relations_total: Mapped[int]
    relations_done: Mapped[int] = mapped_column(default=0)
    current_relation: Mapped[str | None] = mapped_column(String(200))
    facts_done: Mapped[int] = mapped_column(default=0)
    facts_total: Mapped[int] = mapped_column(default=0)
    circuit_ids: Mapped[list[Any]] = mapped_column(default=list)
    edit_ids: Mapped[list[Any]] = mapped_column(default=list)
    analysis_ids: Mapped[list[Any]] = mapped_column(default=list)  # migration 0007
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    requeues: Mapped[int] = mapped_column(default=0)  # times the reaper re-queued it (its worker gone)
    worker: Mapped[str | None] = mapped_column(String(200))
    # Seconds spent in the job function itself (model load included), for the queue-overhead figure.
    work_seconds: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
