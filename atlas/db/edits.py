"""Knowledge edits in the catalogue: what an edit is asked to do (`EditSpec`: validated, keyed as the edits
table keys it), storing a computed edit (one transaction: the `edits` row and its `edit_components`), and
the read side (a page of edits, one edit, the heads and MLPs edits change, a before-vs-after summary across
edits).

No torch here: the API submits and reads edits without the model stack; `atlas.edit_jobs` computes them and
`atlas.tasks.edit` queues them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Self

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.jobs import InvalidJob, UnknownForJob
from atlas.db.models import Component, Edit, EditComponent, Fact, Model, Relation
from atlas.db.store import ModelInfo, default_code_version, resolve_model, transaction
from atlas.spec.json_safe import finite
from atlas.spec.keys import request_key
from atlas.spec.params import DiscoveryError, DiscoveryParams

# atlas.core.editing.registry.EDITORS's names and atlas.core.editing.EditParams's fields, restated so that
# requests are validated without torch (tests/db/test_db_edits.py checks they match).
EDIT_METHODS = ("rome", "ft-m")
EDIT_PARAM_NAMES = (
    "method",
    "layer",
    "steps",
    "lr",
    "stop_loss",
    "kl_factor",
    "weight_decay",
    "clamp_norm",
    "n_prefixes",
    "cov_tokens",
    "cov_ridge",
    "seed",
)
# The circuits of an edit are of single facts, before and after, for the edited fact and each neighbour:
# 2 x (1 + n_neighbours) attributions per edit. Plain EAP is one gradient pass per circuit (EAP-IG would be
# ig_steps of them) and 100 edges keep the diff readable; what an edit changes shows in its top edges.
EDIT_DISCOVERY = DiscoveryParams(method="eap", top_n=100, curve=False, known_only=False, max_facts=1)
DEFAULT_NEIGHBOURS = 2
MAX_NEIGHBOURS = 20
CHANGES = ("gained", "lost", "kept")


class EditRequestError(InvalidJob):
    """A bad edit request; `field` names the value at fault (`subject`, `layer`, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True)
class EditSpec:
    """Edit `subject`'s fact in `relation` (catalogued) to `new_object` in `model`, with `edit` parameters
    (EditParams fields: method, layer, steps, lr, ...), and compare the circuits of the edited fact and of
    `n_neighbours` other facts of the relation before and after, found with `discovery`. Queued as a job,
    it is atlas.tasks.edit.EditJobRequest."""

    model: str
    relation: str
    subject: str
    new_object: str
    edit: dict[str, Any] = field(default_factory=lambda: {"method": "rome", "layer": 4})
    discovery: DiscoveryParams = EDIT_DISCOVERY
    n_neighbours: int = DEFAULT_NEIGHBOURS

    def normalized(self) -> Self:
        """Stripped text and the edit parameters without unset (None) values, so equal requests key equal."""
        return replace(
            self,
            model=self.model.strip(),
            relation=self.relation.strip(),
            subject=self.subject.strip(),
            new_object=self.new_object.strip(),
            edit={k: v for k, v in sorted(self.edit.items()) if v is not None},
        )

    @property
    def method(self) -> str:
        return str(self.edit.get("method", "rome"))

    @property
    def layer(self) -> int:
        return int(self.edit.get("layer", 4))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "relation": self.relation,
            "subject": self.subject,
            "new_object": self.new_object,
            "edit": dict(self.edit),
            "discovery": asdict(self.discovery),
            "n_neighbours": self.n_neighbours,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            data["model"],
            data["relation"],
            data["subject"],
            data["new_object"],
            dict(data["edit"]),
            DiscoveryParams(**data["discovery"]),
            int(data["n_neighbours"]),
        )

    def key(self, code_version: str | None = None) -> str:
        """sha256 of the request and the code version: the edit's `request_key` and its job's key."""
        version = code_version if code_version is not None else default_code_version()
        return request_key("edit", {**self.normalized().to_dict(), "code_version": version})


# ------------------------------------------------------------------------------------------------ validation


def _check_edit_params(edit: dict[str, Any]) -> None:
    unknown = sorted(set(edit) - set(EDIT_PARAM_NAMES))
    if unknown:
        raise EditRequestError(
            unknown[0], f"unknown edit parameter {', '.join(unknown)}; known: {', '.join(EDIT_PARAM_NAMES)}"
        )
    method = edit.get("method", "rome")
    if method not in EDIT_METHODS:
        raise EditRequestError(
            "method", f"unknown edit method {method!r}; choose from {', '.join(EDIT_METHODS)}"
        )
    layer = edit.get("layer", 4)
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise EditRequestError("layer", f"layer must be an integer at least 0, got {layer!r}")
    steps, lr = edit.get("steps"), edit.get("lr")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise EditRequestError("steps", f"steps must be an integer at least 1, got {steps!r}")
    if lr is not None and (not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0):
        raise EditRequestError("lr", f"lr must be a positive number, got {lr!r}")


def subject_fact(session: Session, relation_id: int, relation: str, subject: str) -> tuple[int, str]:
    """The id and object of the relation's (first) fact about `subject`; an error naming its subjects."""
    row = session.execute(
        select(Fact.id, Fact.object)
        .where(Fact.relation_id == relation_id, Fact.subject == subject)
        .order_by(Fact.id)
        .limit(1)
    ).first()
    if row is None:
        subjects = session.scalars(
            select(Fact.subject).where(Fact.relation_id == relation_id).order_by(Fact.id).limit(12)
        ).all()
        listed = ", ".join(dict.fromkeys(subjects)) + (", ..." if len(subjects) == 12 else "")
        raise EditRequestError(
            "subject", f"subject {subject!r} is not in relation {relation!r}; its subjects: {listed}"
        )
    return int(row[0]), str(row[1])


def check_edit_spec(request: EditSpec) -> None:
    """What can be checked without the catalogue (a normalized request): EditRequestError naming the field."""
    checks = (
        ("model", request.model, "model must be given"),
        ("relation", request.relation, "relation must be given"),
        ("subject", request.subject, "the subject is empty"),
        ("new_object", request.new_object, "the new object is empty"),
    )
    for name, value, message in checks:
        if not value:
            raise EditRequestError(name, message)
    if not 0 <= request.n_neighbours <= MAX_NEIGHBOURS:
        raise EditRequestError(
            "n_neighbours", f"n_neighbours must be in 0..{MAX_NEIGHBOURS}, got {request.n_neighbours}"
        )
    try:
        request.discovery.validate()
    except DiscoveryError as error:
        raise EditRequestError("discovery", str(error)) from None
    _check_edit_params(request.edit)


def validate_edit_request(session: Session, request: EditSpec) -> None:
    """Everything the catalogue can check before a model loads (a normalized request). Bad input raises
    EditRequestError naming the field; an unknown relation, UnknownForJob (`unknown relation ...`)."""
    check_edit_spec(request)
    layers = session.scalar(select(func.min(Model.n_layers)).where(Model.name == request.model))
    if layers is not None and request.layer >= layers:
        raise EditRequestError(
            "layer", f"layer {request.layer} is outside model {request.model!r} (layers 0..{layers - 1})"
        )
    relation_id = session.scalar(select(Relation.id).where(Relation.name == request.relation))
    if relation_id is None:
        raise UnknownForJob(
            f"unknown relation {request.relation!r}: import it first (`atlas corpus import PATH`)"
        )
    _, old_object = subject_fact(session, relation_id, request.relation, request.subject)
    if old_object.strip() == request.new_object:
        raise EditRequestError("new_object", f"the new object {request.new_object!r} equals the old object")


# ------------------------------------------------------------------------------------------------- storing


def find_edit(target: Engine | Session, model: str, key: str) -> int | None:
    """The stored edit with this request key in a model of this name, if any."""
    with transaction(target) as session:
        return session.scalar(
            select(Edit.id)
            .join(Model, Edit.model_id == Model.id)
            .where(Model.name == model, Edit.request_key == key)
            .order_by(Edit.id)
            .limit(1)
        )


@dataclass
class ComponentChange:
    """A head or MLP of the edited fact's circuit before or after the edit."""

    component: str
    change: str  # gained, lost, kept
    score_before: float | None
    score_after: float | None


@dataclass
class EditRecord:
    """A computed edit, as plain data (atlas.edit_jobs builds it from the tensors)."""

    request: EditSpec  # normalized
    key: str
    model: ModelInfo
    prompt: str
    old_object: str
    params: dict[str, Any]  # the resolved edit parameters, the discovery parameters, n_neighbours
    edited_sha256: str
    outcome: dict[str, Any]
    update: dict[str, Any]
    lens: list[dict[str, Any]]
    diff: dict[str, Any] | None
    seconds: dict[str, float]
    components: list[ComponentChange]
    code_version: str


def store_edit(target: Engine, record: EditRecord) -> tuple[int, bool]:
    """Store an edit (its row and its components) in one transaction: its id, and whether it was already
    there (the same key stored by a concurrent writer: that copy is kept, nothing is written)."""
    for attempt in range(3):
        try:
            with transaction(target, write=True) as session:
                return _store(session, record)
        except IntegrityError:
            existing = find_edit(target, record.model.name, record.key)
            if existing is not None:
                return existing, True
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _store(session: Session, record: EditRecord) -> tuple[int, bool]:
    model_row = resolve_model(session, record.model)
    existing = session.scalar(
        select(Edit.id).where(Edit.model_id == model_row.id, Edit.request_key == record.key)
    )
    if existing is not None:
        return existing, True
    request = record.request
    relation_id = session.scalar(select(Relation.id).where(Relation.name == request.relation))
    if relation_id is None:
        raise NotCatalogued(f"unknown relation {request.relation!r}: import it first")
    fact_id = session.scalar(
        select(Fact.id).where(
            Fact.relation_id == relation_id, Fact.subject == request.subject, Fact.object == record.old_object
        )
    )
    edit = Edit(
        model_id=model_row.id,
        relation_id=relation_id,
        fact_id=fact_id,
        subject=request.subject,
        prompt=record.prompt,
        old_object=record.old_object,
        new_object=request.new_object,
        method=request.method,
        layer=request.layer,
        params=finite(record.params),
        request_key=record.key,
        edited_sha256=record.edited_sha256,
        outcome=finite(record.outcome),
        update=finite(record.update),
        lens=finite(record.lens),
        diff=finite(record.diff),
        seconds=finite(record.seconds),
        code_version=record.code_version,
    )
    session.add(edit)
    session.flush()
    components = dict(
        session.execute(select(Component.name, Component.id).where(Component.model_id == model_row.id))
        .tuples()
        .all()
    )
    rows = [
        {
            "edit_id": edit.id,
            "component_id": components[c.component],
            "change": c.change,
            "score_before": finite(c.score_before),
            "score_after": finite(c.score_after),
        }
        for c in record.components
    ]
    if rows:
        session.execute(insert(EditComponent), rows)
    return edit.id, False


def other_relation_names(target: Engine | Session, relation: str, limit: int = 3) -> list[str]:
    """A few catalogued relations besides this one (by name), for the locality probes."""
    with transaction(target) as session:
        return list(
            session.scalars(
                select(Relation.name).where(Relation.name != relation).order_by(Relation.name).limit(limit)
            )
        )


# ------------------------------------------------------------------------------------------------- reading


def _summary(edit: Edit, model: str, relation: str) -> dict[str, Any]:
    outcome, diff = edit.outcome or {}, edit.diff or {}
    return {
        "id": edit.id,
        "model": model,
        "relation": relation,
        "subject": edit.subject,
        "old_object": edit.old_object,
        "new_object": edit.new_object,
        "method": edit.method,
        "layer": edit.layer,
        "efficacy": outcome.get("efficacy"),
        "efficacy_prob": outcome.get("efficacy_prob"),
        "generalization": outcome.get("generalization"),
        "locality": outcome.get("locality"),
        "node_jaccard": diff.get("node_jaccard"),
        "edge_jaccard": diff.get("edge_jaccard"),
        "nodes_gained": len(diff.get("nodes_gained", [])),
        "nodes_lost": len(diff.get("nodes_lost", [])),
        "created_at": edit.created_at.isoformat() if edit.created_at else None,
    }


def _edits_query(model: str | None, relation: str | None, method: str | None, layer: int | None) -> Any:
    query = (
        select(Edit, Model.name, Relation.name)
        .join(Model, Edit.model_id == Model.id)
        .join(Relation, Edit.relation_id == Relation.id)
    )
    for column, value in ((Model.name, model), (Relation.name, relation), (Edit.method, method)):
        if value is not None:
            query = query.where(column == value)
    if layer is not None:
        query = query.where(Edit.layer == layer)
    return query


def list_edits(
    target: Engine | Session,
    model: str | None = None,
    relation: str | None = None,
    method: str | None = None,
    layer: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Edits matching the filters, by id, `limit` per page: {"items", "next"} (pass `next` as `after`)."""
    if limit < 1:
        raise CatalogueError(f"limit must be at least 1, got {limit}")
    query = _edits_query(model, relation, method, layer)
    if after is not None:
        query = query.where(Edit.id > after)
    with transaction(target) as session:
        rows = session.execute(query.order_by(Edit.id).limit(limit + 1)).all()
        items = [_summary(*row) for row in rows[:limit]]
    return {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}


def get_edit(target: Engine | Session, edit_id: int) -> dict[str, Any]:
    """One edit whole: what was asked, the parameters, the outcome, the weight update, the logit lens, the
    circuit diff (`diff`: the edited fact's, with `neighbours`), its heads and MLPs gained, lost or kept."""
    with transaction(target) as session:
        row = session.execute(
            select(Edit, Model, Relation.name, Relation.category)
            .join(Model, Edit.model_id == Model.id)
            .join(Relation, Edit.relation_id == Relation.id)
            .where(Edit.id == edit_id)
        ).one_or_none()
        if row is None:
            raise NotCatalogued(f"unknown edit {edit_id}: no edit with that id (`atlas edits list`)")
        edit, model, relation, category = row
        components = [
            {"component": name, "change": change, "score_before": before, "score_after": after}
            for name, change, before, after in session.execute(
                select(
                    Component.name,
                    EditComponent.change,
                    EditComponent.score_before,
                    EditComponent.score_after,
                )
                .join(Component, EditComponent.component_id == Component.id)
                .where(EditComponent.edit_id == edit_id)
                .order_by(Component.id)
            )
        ]
        return {
            **_summary(edit, model.name, relation),
            "n_layers": model.n_layers,
            "n_heads": model.n_heads,
            "category": category,
            "prompt": edit.prompt,
            "params": edit.params,
            "outcome": edit.outcome,
            "update": edit.update,
            "lens": edit.lens,
            "diff": edit.diff,
            "seconds": edit.seconds,
            "edited_sha256": edit.edited_sha256,
            "code_version": edit.code_version,
            "components": components,
        }


def edit_component_changes(
    target: Engine | Session,
    model: str | None = None,
    method: str | None = None,
    layer: int | None = None,
    relation: str | None = None,
) -> list[dict[str, Any]]:
    """The heads and MLPs whose place in edited facts' circuits edits change: per component, how many edits
    gained, lost and kept it (ROME at layer L recruits the heads `gained` counts for method rome, layer L),
    most gained first."""
    query = (
        select(
            Model.name, Component.name, Component.kind, Component.layer, Component.head, EditComponent.change
        )
        .select_from(EditComponent)
        .join(Component, EditComponent.component_id == Component.id)
        .join(Edit, EditComponent.edit_id == Edit.id)
        .join(Model, Edit.model_id == Model.id)
        .join(Relation, Edit.relation_id == Relation.id)
    )
    for column, value in ((Model.name, model), (Edit.method, method), (Relation.name, relation)):
        if value is not None:
            query = query.where(column == value)
    if layer is not None:
        query = query.where(Edit.layer == layer)
    counts: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(CHANGES, 0))
    with transaction(target) as session:
        for model_name, name, kind, comp_layer, head, change in session.execute(query):
            counts[(model_name, name, kind, comp_layer, head)][change] += 1
    rows = [
        {"model": m, "component": n, "kind": k, "layer": lay, "head": h, **c, "n_edits": sum(c.values())}
        for (m, n, k, lay, h), c in counts.items()
    ]
    rows.sort(key=lambda r: (-r["gained"], -r["lost"], r["model"], r["layer"], r["kind"], r["head"] or 0))
    return rows


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v))]
    return sum(numbers) / len(numbers) if numbers else None


def edit_comparison(
    target: Engine | Session, model: str | None = None, method: str | None = None, layer: int | None = None
) -> list[dict[str, Any]]:
    """Before vs after across edits, per model, method and layer: how many edits, their mean efficacy,
    generalization and locality, the new and old objects' mean probability before and after, and how much
    the edited facts' circuits changed (node and edge Jaccard, heads and MLPs gained and lost)."""
    groups: dict[tuple[str, str, int], list[Edit]] = defaultdict(list)
    with transaction(target) as session:
        for edit, model_name, _ in session.execute(
            _edits_query(model, None, method, layer).order_by(Edit.id)
        ):
            groups[(model_name, edit.method, edit.layer)].append(edit)
        summaries = []
        for (model_name, edit_method, edit_layer), edits in sorted(groups.items()):
            outcomes = [e.outcome or {} for e in edits]
            diffs = [e.diff or {} for e in edits]

            def fate(which: str, when: str, outcomes: list[dict[str, Any]] = outcomes) -> float | None:
                return _mean([(o.get(which) or {}).get(f"prob_{when}") for o in outcomes])

            summaries.append(
                {
                    "model": model_name,
                    "method": edit_method,
                    "layer": edit_layer,
                    "n_edits": len(edits),
                    "efficacy": _mean([o.get("efficacy") for o in outcomes]),
                    "efficacy_prob": _mean([o.get("efficacy_prob") for o in outcomes]),
                    "generalization": _mean([o.get("generalization") for o in outcomes]),
                    "locality": _mean([o.get("locality") for o in outcomes]),
                    "new_prob_before": fate("new", "before"),
                    "new_prob_after": fate("new", "after"),
                    "old_prob_before": fate("old", "before"),
                    "old_prob_after": fate("old", "after"),
                    "node_jaccard": _mean([d.get("node_jaccard") for d in diffs]),
                    "edge_jaccard": _mean([d.get("edge_jaccard") for d in diffs]),
                    "nodes_gained": _mean([len(d.get("nodes_gained", [])) for d in diffs if d]),
                    "nodes_lost": _mean([len(d.get("nodes_lost", [])) for d in diffs if d]),
                }
            )
    return summaries
