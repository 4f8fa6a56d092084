"""Wire schemas: what the API accepts and returns, apart from the catalogue's tables (atlas.db.models)."""

from __future__ import annotations

import math
from dataclasses import fields as dataclass_fields
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from atlas.db.edits import EDIT_METHODS
from atlas.spec.analyses import ANALYSES, ANALYSIS_KINDS, analysis_spec
from atlas.spec.corpus import CATEGORIES
from atlas.spec.errors import Invalid
from atlas.spec.methods import DEFAULT_METHOD, METHOD_NAMES, method_spec
from atlas.spec.params import DEFAULT_BOOTSTRAP, MAX_BOOTSTRAP, MAX_IG_STEPS, TEMPLATE_AUTO, DiscoveryParams

MAX_ID = 2**31 - 1  # ids are 32-bit in the schema: larger ones are rejected (422), not sent to the database
MAX_PAGE = 500

# Printable text: no control characters (PostgreSQL cannot store NUL; none belongs in a name).
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00-\x1f\x7f]+$")]
RelationName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]
ComponentName = Annotated[str, StringConstraints(pattern=r"^(a[0-9]{1,4}\.h[0-9]{1,4}|m[0-9]{1,4})$")]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Category = Literal["factual", "commonsense", "linguistic", "bias", "control"]
# An attribution method: one of the registry's (atlas.spec.methods), listed as an enum in the OpenAPI schema.
Method = Annotated[
    str,
    AfterValidator(lambda name: method_spec(name).name),
    WithJsonSchema({"type": "string", "enum": list(METHOD_NAMES)}),
]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
assert set(CATEGORIES) == set(Category.__args__)  # type: ignore[attr-defined]


class FieldError(BaseModel):
    field: str = Field(description="Where the bad value is: `query.limit`, `body.relations.0`, `path.id`.")
    message: str


class ErrorBody(BaseModel):
    """Every error: a message a person can act on, and for bad parameters the fields at fault."""

    message: str
    errors: list[FieldError] = Field(default_factory=list)


# -------------------------------------------------------------------------------------------- catalogue


class MethodView(BaseModel):
    name: str
    takes_steps: bool = Field(description="Whether `ig_steps` applies (integrated gradients).")
    summary: str
    default: bool


class ModelView(BaseModel):
    id: int
    name: str
    architecture: str
    n_layers: int
    n_heads: int
    d_model: int
    dtype: str
    weights_sha256: str
    n_circuits: int
    created_at: str | None


class ModelPage(BaseModel):
    items: list[ModelView]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class RelationView(BaseModel):
    id: int
    name: str
    title: str
    category: str
    domain: str
    range: str
    symmetric: bool
    prompt_templates: list[str]
    prompt_templates_zs: list[str]
    content_sha256: str
    n_facts: int
    n_circuits: int


class RelationPage(BaseModel):
    items: list[RelationView]
    next: int | None


class FactView(BaseModel):
    id: int
    relation: str
    subject: str
    object: str


class FactPage(BaseModel):
    items: list[FactView]
    next: int | None


# --------------------------------------------------------------------------------------------- circuits


class CircuitSummary(BaseModel):
    id: int
    model: str
    relation: str
    category: str
    method: str
    level: str
    ig_steps: int
    metric: str
    selection: str
    top_n: int
    threshold: float
    n_nodes: int
    n_edges: int
    hit_original: float | None
    hit_circuit: float | None
    hit_random: float | None
    faithfulness: float | None
    created_at: str
    target_faithfulness: float | None = Field(None, description="Sized by faithfulness: the target.")
    target_met: bool | None = Field(None, description="Whether the size search met it (null: a fixed size).")
    faithfulness_heldout: float | None = Field(None, description="Faithfulness on the held-out facts.")
    faithfulness_random_heldout: float | None = Field(
        None, description="A random circuit of the same size, on the held-out facts."
    )
    top1_circuit_heldout: float | None = None


class CircuitPage(BaseModel):
    items: list[CircuitSummary]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class NodeScore(BaseModel):
    node: str
    score: float | None
    stability: float | None = Field(None, description="Share of bootstrap resamples keeping it.")
    role: str | None = Field(None, description="A head's role: mover, relation, mix or other.")
    subject_attention: float | None = None
    relation_attention: float | None = None


class EdgeScore(BaseModel):
    edge: str = Field(description="`writer->reader`, with the head input as `<q>`, `<k>` or `<v>`.")
    score: float | None
    stability: float | None = Field(None, description="Share of bootstrap resamples keeping it.")


class CircuitDetail(CircuitSummary):
    n_random_edges: int
    run: dict[str, Any] = Field(description="The run's parameters, status, fact counts and timings.")
    evaluations: dict[str, Any] = Field(description="Per split (discovery, heldout): Hit@10, faithfulness.")
    reproducibility: dict[str, Any] = Field(
        description="Model (architecture, shape, dtype, weights sha256), relation content hash, corpus "
        "hash, code version, seed, template, and the stored score matrix's layout."
    )
    roles: dict[str, Any] | None = Field(
        None, description="The head roles' thresholds, number of prompts and counts per role."
    )
    search: dict[str, Any] | None = Field(
        None,
        description="Sized by faithfulness: target, cap, n_top (edges taken before pruning), size, "
        "faithfulness, target_met, folds, bound and `trace`, every size evaluated as [n_top, size, "
        "faithfulness in sample (null where not evaluated: out of fold only the kept size and the curve's "
        "sizes are), faithfulness judged].",
    )
    template: dict[str, Any] | None = Field(
        None, description="The template used; for `template auto`, facts known under each candidate."
    )
    stability: dict[str, Any] | None = Field(None, description="The bootstrap: resamples (0: none).")
    nodes: list[NodeScore]
    edges: list[EdgeScore]


class RecutView(BaseModel):
    circuit_id: int
    level: str
    top_n: int
    n_nodes: int
    n_edges: int
    nodes: list[NodeScore]
    edges: list[EdgeScore]


class EapGraph(BaseModel):
    """EAP-IG's graph JSON (`Graph.to_json` / `Graph.from_json` of the eap-ig library)."""

    cfg: dict[str, Any]
    nodes: dict[str, dict[str, Any]]
    edges: dict[str, dict[str, Any]]


# ------------------------------------------------------------------------------------------- components


class RecurringComponent(BaseModel):
    component: str
    kind: str
    layer: int | None
    head: int | None
    n_relations: int = Field(description="The count: relations whose counted circuits hold it.")
    relations: list[str]
    expected: float | None = Field(description="The count expected if each circuit were a random one.")
    enrichment: float | None = Field(description="n_relations / expected.")
    p_value: float | None = Field(description="One-sided Poisson-binomial P(count >= n_relations).")
    q_value: float | None = Field(description="Benjamini-Hochberg across the model's heads and MLPs.")
    plumbing: bool = Field(description="Random circuits of these sizes almost always hold it.")
    generic: bool | None = Field(description="Recurs in control circuits too (null: no controls).")
    mean_stability: float | None = Field(description="Mean bootstrap stability where counted.")
    roles: dict[str, int] = Field(description="Per role, the counted circuits giving the head that role.")


class RecurringView(BaseModel):
    model: str
    category: str | None
    method: str | None
    min_count: int
    role: str | None = None
    max_q: float | None = None
    min_stability: float | None = None
    exclude_generic: bool = False
    include_unmet: bool = False
    n_relations: int = Field(description="Relations counted.")
    n_circuits: int = Field(description="Circuits counted.")
    n_unmet: int = Field(description="Circuits left out: faithfulness target not met.")
    controls: list[str] = Field(description="Control relations whose circuits set the generic flag.")
    components: list[RecurringComponent]


class CircuitAppearance(BaseModel):
    id: int
    method: str
    score: float | None


class RelationAppearance(BaseModel):
    relation: str
    category: str
    circuits: list[CircuitAppearance]


class ModelAppearance(BaseModel):
    model: str
    n_layers: int
    relative_depth: float
    n_circuits: int
    n_relations: int
    relations: list[RelationAppearance]


class EditAppearance(BaseModel):
    """A knowledge edit whose edited fact's circuit gained, lost or kept the component."""

    id: int
    model: str
    relation: str
    subject: str
    old_object: str
    new_object: str
    method: str
    layer: int
    change: str = Field(description="`gained`, `lost` or `kept` by the edited fact's circuit.")
    score_before: float | None
    score_after: float | None


class ComponentView(BaseModel):
    component: str
    kind: str
    layer: int
    head: int | None
    n_models: int
    n_relations: int
    n_circuits: int
    relations: list[str]
    models: list[ModelAppearance]
    edits: list[EditAppearance]


class PairJaccard(BaseModel):
    a: int
    b: int
    node_jaccard: float
    edge_jaccard: float


class ComparisonView(BaseModel):
    circuits: list[CircuitSummary]
    shared_nodes: list[str]
    shared_edges: list[str]
    node_jaccard: float
    edge_jaccard: float
    pairwise: list[PairJaccard]


class OverlapView(BaseModel):
    circuits: list[CircuitSummary]
    node_jaccard: list[list[float]]
    edge_jaccard: list[list[float]]


# ------------------------------------------------------------------------------------------------- jobs


class JobProgress(BaseModel):
    relations_done: int
    relations_total: int
    current_relation: str | None
    facts_done: int
    facts_total: int


class JobView(BaseModel):
    id: int
    kind: str
    queue: str
    model: str
    request: dict[str, Any]
    status: str
    progress: JobProgress
    circuit_ids: list[int]
    edit_ids: list[int]
    analysis_ids: list[int]
    error: str | None
    attempts: int
    requeues: int  # times the reaper re-queued it after its worker stopped
    worker: str | None
    work_seconds: float | None
    created_at: str | None
    started_at: str | None
    heartbeat_at: str | None
    finished_at: str | None


class JobPage(BaseModel):
    items: list[JobView]
    next: int | None


class FactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Text
    object: Text


class FactList(BaseModel):
    """Facts to find a circuit for, stored as a relation of their own (the same name and content again is
    the same relation; the same name with other content is refused)."""

    model_config = ConfigDict(extra="forbid")
    relation: RelationName = Field(description="A name for the relation these facts form.")
    template: Text = Field(
        description="The prompt, with `{}` where the subject goes: `The capital of {} is`."
    )
    category: Category = "factual"
    title: str = Field("", max_length=200)
    facts: list[FactIn] = Field(min_length=2, max_length=10_000)

    @field_validator("template")
    @classmethod
    def one_slot(cls, template: str) -> str:
        if template.count("{}") != 1:
            raise ValueError(f"a template needs exactly one '{{}}', found {template.count('{}')}")
        return template


class JobRequest(BaseModel):
    """An extraction job: circuits of these relations (catalogued ones, or a fact list) in this model."""

    model_config = ConfigDict(extra="forbid")
    model: Name = Field(description="A model name `atlas models` lists: `smollm2-135m`, `tiny-llama`, ...")
    relations: list[RelationName] = Field(default_factory=list, max_length=200)
    facts: FactList | None = None
    method: Method = DEFAULT_METHOD
    ig_steps: int = Field(
        5, ge=1, le=MAX_IG_STEPS, description="Integrated-gradient steps (methods with steps)."
    )
    metric: Literal["logprob", "logit-diff"] = "logprob"
    target_faithfulness: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Size the circuit as the smallest one this faithful on the discovery facts (the default "
        "rule, 0.8). Not with top_n or threshold.",
    )
    confidence: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="The target must hold on this share of bootstrap resamples of the facts.",
    )
    size_folds: int | None = Field(
        None,
        ge=0,
        le=10,
        description="Judge each size out of fold: the facts in this many folds, each scored on the circuit "
        "the other folds rank.",
    )
    max_edges: int | None = Field(None, ge=1, description="The size search's cap in edges (2% of the graph).")
    max_nodes: int | None = Field(
        None, ge=1, description="Node level: the cap in heads and MLPs (a quarter)."
    )
    top_n: int | None = Field(None, ge=1, le=1_000_000, description="A fixed size instead: the top-n edges.")
    threshold: float | None = Field(None, ge=0, description="Or every edge ranked at least it.")
    ranking: Literal["signed", "absolute"] = Field(
        "signed", description="signed: edges whose ablation lowers the metric most first; absolute: |score|."
    )
    bootstrap: int = Field(
        DEFAULT_BOOTSTRAP,
        ge=0,
        le=MAX_BOOTSTRAP,
        description="Resamples for each member's stability; 0: off.",
    )
    max_facts: int = Field(32, ge=1, le=10_000)
    heldout_fraction: float = Field(0.5, ge=0, lt=1)
    template: Annotated[int, Field(ge=0, le=1000)] | Text | None = Field(
        None, description=f"A template index, a string with {{}}, or {TEMPLATE_AUTO!r}."
    )
    ablation: Literal["corrupt", "zero", "mean"] = "corrupt"
    batch_size: int = Field(16, ge=1, le=1024)
    seed: int = Field(0, ge=0, le=MAX_ID)
    curve: bool = True
    known_only: bool = True
    level: Literal["edge", "node"] | None = None
    queue: Literal["cpu", "gpu"] = "cpu"

    @field_validator("threshold")
    @classmethod
    def finite_threshold(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value

    @field_validator("template")
    @classmethod
    def template_slot(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and value != TEMPLATE_AUTO and value.count("{}") != 1:
            raise ValueError(
                f"a template needs exactly one '{{}}' (or is {TEMPLATE_AUTO!r}), found {value.count('{}')}"
            )
        return value

    @model_validator(mode="after")
    def consistent(self) -> JobRequest:
        if not self.relations and self.facts is None:
            raise ValueError("give `relations` (catalogued relation names) or `facts` (a fact list)")
        try:  # the one validation the CLI and the queue use too
            self.params().validate()
        except Invalid as error:
            raise ValueError(str(error)) from None
        return self

    def params(self) -> DiscoveryParams:
        return DiscoveryParams(
            **self.model_dump(
                include=set(DiscoveryParams.__dataclass_fields__) & set(type(self).model_fields)
            )
        )


class JobSubmission(BaseModel):
    """What POST /jobs did: queued a new job (created), found an identical job already queued or running,
    or found every run asked for already in the catalogue (no job; `circuits` are those runs)."""

    created: bool
    message: str
    job: JobView | None
    existing_circuits: dict[str, int]
    circuits: list[CircuitSummary]


# ------------------------------------------------------------------------------------------------- edits

EditMethod = Literal["rome", "ft-m"]
assert set(EDIT_METHODS) == set(EditMethod.__args__)  # type: ignore[attr-defined]


class EditSummary(BaseModel):
    """A knowledge edit: what was edited, its headline outcome, how much the edited fact's circuit changed."""

    id: int
    model: str
    relation: str
    subject: str
    old_object: str
    new_object: str
    method: str
    layer: int
    efficacy: bool | None = Field(description="The new object is ranked first at the edit prompt.")
    efficacy_prob: bool | None = Field(description="P(new) > P(old) at the edit prompt, after the edit.")
    generalization: float | None
    locality: float | None
    node_jaccard: float | None = Field(
        description="Heads and MLPs of the edited fact's circuit, before vs after."
    )
    edge_jaccard: float | None
    nodes_gained: int
    nodes_lost: int
    created_at: str | None


class EditPage(BaseModel):
    items: list[EditSummary]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class EditComponentChange(BaseModel):
    component: str
    change: str = Field(description="`gained`, `lost` or `kept` by the edited fact's circuit.")
    score_before: float | None
    score_after: float | None


class EditDetail(EditSummary):
    """One edit whole. `diff` is the edited fact's circuit diff (nodes and edges gained, lost, kept; edges
    rescored), with `neighbours`: the same for other facts of the relation; `lens` the new object's rank
    through the logit lens of each head and MLP of the edited model."""

    n_layers: int
    n_heads: int
    category: str
    prompt: str
    params: dict[str, Any]
    outcome: dict[str, Any]
    update: dict[str, Any]
    lens: list[dict[str, Any]] | None
    diff: dict[str, Any] | None
    seconds: dict[str, Any] | None
    edited_sha256: str
    code_version: str
    components: list[EditComponentChange]


class EditComponentCount(BaseModel):
    """A head or MLP across edits: how many edited facts' circuits gained, lost and kept it."""

    model: str
    component: str
    kind: str
    layer: int | None
    head: int | None
    gained: int
    lost: int
    kept: int
    n_edits: int


class EditComparison(BaseModel):
    """Before vs after across the edits of one model, method and layer (means over the edits)."""

    model: str
    method: str
    layer: int
    n_edits: int
    efficacy: float | None
    efficacy_prob: float | None
    generalization: float | None
    locality: float | None
    new_prob_before: float | None
    new_prob_after: float | None
    old_prob_before: float | None
    old_prob_after: float | None
    node_jaccard: float | None
    edge_jaccard: float | None
    nodes_gained: float | None
    nodes_lost: float | None


class EditRequestIn(BaseModel):
    """A knowledge edit: rewrite `subject`'s object in a catalogued relation to `new_object` in `model`."""

    model_config = ConfigDict(extra="forbid")
    model: Name = Field(description="A model name `atlas models` lists: `smollm2-135m`, `tiny-llama`, ...")
    relation: RelationName = Field(description="A catalogued relation holding a fact about `subject`.")
    subject: Text
    new_object: Text
    method: EditMethod = "rome"
    layer: int = Field(4, ge=0, le=10_000, description="The MLP layer the edit rewrites.")
    steps: int | None = Field(None, ge=1, le=10_000, description="Optimization steps (the method's default).")
    lr: float | None = Field(None, gt=0, le=1_000, description="Learning rate (the method's default).")
    n_neighbours: int = Field(2, ge=0, le=20, description="Other facts whose circuits are compared too.")
    top_n: int = Field(100, ge=1, le=1_000_000, description="Edges of each fact's circuit.")
    queue: Literal["cpu", "gpu"] = "cpu"


class EditSubmissionView(BaseModel):
    """What POST /edits did: queued a new job (created), found an identical job already queued or running,
    or found the edit already in the catalogue (no job; `edit` is it)."""

    created: bool
    message: str
    job: JobView | None
    edit: EditSummary | None


# ------------------------------------------------------------------------------------------------ analyses

# An analysis kind: one of the registry's (atlas.spec.analyses), listed as an enum in the OpenAPI schema.
AnalysisKind = Annotated[
    str,
    AfterValidator(lambda kind: analysis_spec(kind).name),
    WithJsonSchema({"type": "string", "enum": list(ANALYSIS_KINDS)}),
]


class AnalysisSummary(BaseModel):
    id: int
    kind: str = Field(description="`hallucination`, `icl` (in-context learning, Table 2) or `lens`.")
    model: str
    relation: str
    params: dict[str, Any] = Field(description="The analysis's parameters, all of them (defaults included).")
    seconds: float | None = Field(description="How long the analysis took to compute.")
    code_version: str
    created_at: str | None
    summary: dict[str, Any] = Field(
        description="Headline numbers: correct/wrong counts, node Jaccard and top pushers (hallucination); "
        "the Table 2 probabilities (icl); where the object first surfaces (lens)."
    )


class AnalysisPage(BaseModel):
    items: list[AnalysisSummary]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class AnalysisDetail(AnalysisSummary):
    result: dict[str, Any] = Field(description="The whole result, as the analysis's `to_dict()` gave it.")


class RelationAnalyses(BaseModel):
    relation: str
    items: list[AnalysisDetail]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


def _params_of(cls: type[Any]) -> str:
    return ", ".join(f"`{f.name}` ({f.default!r})" for f in dataclass_fields(cls))


class AnalysisRequestIn(BaseModel):
    """An analysis to queue: `kind` of a catalogued `relation` in `model`, with the kind's parameters."""

    model_config = ConfigDict(extra="forbid")
    kind: AnalysisKind
    model: Name = Field(description="A model name `atlas models` lists: `smollm2-135m`, `tiny-llama`, ...")
    relation: RelationName = Field(description="A catalogued relation.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        max_length=32,
        description="The kind's parameters; missing ones take their defaults. "
        + "; ".join(f"{a.name}: {_params_of(a.params)}" for a in ANALYSES),
    )
    queue: Literal["cpu", "gpu"] = "cpu"


class AnalysisSubmissionView(BaseModel):
    """What POST /analyses did: queued a new job (created), found an identical job already queued or
    running, or found the analysis already in the catalogue (no job; `analysis` is it)."""

    created: bool
    message: str
    job: JobView | None
    analysis: AnalysisSummary | None
