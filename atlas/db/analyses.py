"""Relation-level analyses in the catalogue: a model's hallucinations on a relation, its in-context learning
(the paper's Table 2) and where a relation's objects surface by logit lens, each stored as JSON with its
parameters.

An analysis is keyed by its kind, model, relation and `params_key` (the sha256 of its parameters and the code
version, as canonical JSON), so storing the same analysis again (a retry, a second process that lost the
race) returns the id already there and stores nothing new. The relation is catalogued with its facts if new,
as `atlas.db.store.store_discovery` does. Bad input raises `CatalogueError` and stores nothing. No torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.browse import page_of
from atlas.db.models import Analysis, Circuit, CircuitNode, Component, Model, Relation, Run
from atlas.db.store import (
    ModelInfo,
    default_code_version,
    ensure_relation,
    find_model,
    resolve_model,
    transaction,
)
from atlas.spec.analyses import ANALYSIS_KINDS
from atlas.spec.corpus import Relation as CorpusRelation
from atlas.spec.json_safe import finite

if TYPE_CHECKING:
    from atlas.core.models import LoadedModel


def params_key(params: dict[str, Any], code_version: str) -> str:
    """sha256 of the parameters and the code version as canonical JSON (sorted keys, no spaces)."""
    document = {"params": finite(params), "code_version": code_version}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_kind(kind: str) -> None:
    if kind not in ANALYSIS_KINDS:
        raise CatalogueError(f"unknown analysis kind {kind!r}: one of {', '.join(ANALYSIS_KINDS)}")


def _find(session: Session, kind: str, model_id: int, relation_id: int, key: str) -> int | None:
    return session.scalar(
        select(Analysis.id).where(
            Analysis.kind == kind,
            Analysis.model_id == model_id,
            Analysis.relation_id == relation_id,
            Analysis.params_key == key,
        )
    )


def find_analysis(
    target: Engine | Session,
    kind: str,
    model: LoadedModel | ModelInfo | str,
    relation_name: str,
    params: dict[str, Any],
    code_version: str | None = None,
) -> int | None:
    """The id of the stored analysis of this kind, model, relation and parameters, if any: look before
    computing. `code_version` defaults to `default_code_version()`."""
    _check_kind(kind)
    key = params_key(params, code_version or default_code_version())
    with transaction(target) as session:
        model_row = find_model(session, model)
        relation_id = session.scalar(select(Relation.id).where(Relation.name == relation_name))
        if model_row is None or relation_id is None:
            return None
        return _find(session, kind, model_row.id, relation_id, key)


def store_analysis(
    target: Engine | Session,
    kind: str,
    model: LoadedModel | ModelInfo | str,
    relation: CorpusRelation,
    params: dict[str, Any],
    result: dict[str, Any],
    seconds: float | None = None,
    code_version: str | None = None,
) -> int:
    """Store an analysis's result in one transaction (the model and the relation with its facts catalogued if
    new); its id. The same kind, model, relation and parameters stored again return the existing id and
    write nothing. `model` is the loaded model (or its ModelInfo), or the name of a catalogued model."""
    _check_kind(kind)
    if not isinstance(params, dict) or not isinstance(result, dict):
        raise CatalogueError("an analysis's params and result must be JSON objects (dicts)")
    if result.get("relation", relation.name) != relation.name:
        raise CatalogueError(f"the analysis is of relation {result['relation']!r}, not of {relation.name!r}")
    if seconds is not None and not seconds >= 0:
        raise CatalogueError(f"seconds must be a non-negative number, got {seconds!r}")
    version = code_version or default_code_version()
    key = params_key(params, version)
    try:
        params_json, result_json = (
            json.loads(json.dumps(finite(value), allow_nan=False)) for value in (params, result)
        )
    except (TypeError, ValueError) as error:
        raise CatalogueError(f"an analysis's params and result must be JSON: {error}") from error
    for attempt in range(3):
        try:
            with transaction(target, write=True) as session:
                model_row = resolve_model(session, model)
                if result.get("model", model_row.name) != model_row.name:
                    raise CatalogueError(
                        f"the analysis is of model {result['model']!r}, not of {model_row.name!r}"
                    )
                relation_row, _ = ensure_relation(session, relation)
                existing = _find(session, kind, model_row.id, relation_row.id, key)
                if existing is not None:
                    return existing
                row = Analysis(
                    kind=kind,
                    model_id=model_row.id,
                    relation_id=relation_row.id,
                    params=params_json,
                    params_key=key,
                    result=result_json,
                    seconds=seconds,
                    code_version=version,
                )
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            # A concurrent writer stored the same analysis first (return it), or the same model or relation
            # (try again: they are there now).
            found = find_analysis(target, kind, model, relation.name, params, version)
            if found is not None:
                return found
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------ reads


def headline(kind: str, result: dict[str, Any]) -> dict[str, Any]:
    """An analysis's few headline numbers: the correct/wrong counts and node Jaccard of a hallucination
    analysis, the Table 2 row of an ICL one, where the object first surfaces for a lens one."""
    if kind == "hallucination":
        return {
            "n_checked": result.get("n_checked"),
            "n_correct": result.get("n_correct"),
            "n_wrong": result.get("n_wrong"),
            "node_jaccard": result.get("node_jaccard"),
            "edge_jaccard": result.get("edge_jaccard"),
            "top_pushers": [p.get("name") for p in result.get("pushers") or []][:5],
        }
    if kind == "icl":
        keys = ("n_facts", "prob_zero_shot", "prob_original", "prob_icl_ablated", "prob_random_ablated")
        return {
            **{k: result.get(k) for k in keys},
            "n_icl_only_heads": len(result.get("icl_only_heads") or []),
        }
    lens = ("n_prompts", "first_top1", "best", "first_top1_layer")
    return {k: result.get(k) for k in lens if k in result}


def _view(analysis: Analysis, model: str, relation: str, with_result: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": analysis.id,
        "kind": analysis.kind,
        "model": model,
        "relation": relation,
        "params": analysis.params,
        "seconds": analysis.seconds,
        "code_version": analysis.code_version,
        "created_at": analysis.created_at.isoformat() if analysis.created_at else None,
        "summary": headline(analysis.kind, analysis.result or {}),
    }
    if with_result:
        view["result"] = analysis.result
    return finite(view)


def _query() -> Any:
    return (
        select(Analysis, Model.name, Relation.name)
        .join(Model, Analysis.model_id == Model.id)
        .join(Relation, Analysis.relation_id == Relation.id)
    )


def list_analyses(
    target: Engine | Session,
    model: str | None = None,
    relation: str | None = None,
    kind: str | None = None,
    after: int | None = None,
    limit: int = 50,
    with_result: bool = False,
) -> dict[str, Any]:
    """A keyset page `{items, next}` of stored analyses by id (pass `next` as `after` for the following
    page), filtered by model name, relation name and kind; `with_result` adds each one's full result."""
    if limit < 1:
        raise CatalogueError(f"limit must be at least 1, got {limit}")
    query = _query().order_by(Analysis.id).limit(limit + 1)
    if model is not None:
        query = query.where(Model.name == model)
    if relation is not None:
        query = query.where(Relation.name == relation)
    if kind is not None:
        query = query.where(Analysis.kind == kind)
    if after is not None:
        query = query.where(Analysis.id > after)
    with transaction(target) as session:
        items = [_view(a, m, r, with_result) for a, m, r in session.execute(query)]
    return page_of(items, limit)


def get_analysis(target: Engine | Session, analysis_id: int) -> dict[str, Any]:
    """One stored analysis with its parameters and full result."""
    with transaction(target) as session:
        row = session.execute(_query().where(Analysis.id == analysis_id)).one_or_none()
        if row is None:
            raise NotCatalogued(f"no analysis with id {analysis_id}")
        return _view(row[0], row[1], row[2], with_result=True)


def _circuit_nodes(session: Session, circuit_id: int) -> list[str]:
    """The heads and MLPs in a stored circuit, in component order."""
    return list(
        session.scalars(
            select(Component.name)
            .join(CircuitNode, CircuitNode.component_id == Component.id)
            .where(
                CircuitNode.circuit_id == circuit_id,
                CircuitNode.in_circuit,
                Component.kind.in_(("head", "mlp")),
            )
            .order_by(Component.id)
        )
    )


def latest_circuit_nodes(
    target: Engine | Session, model: LoadedModel | ModelInfo | str, relation_name: str
) -> tuple[int, list[str]] | None:
    """The newest stored circuit of this model and relation, as (id, its heads and MLPs), if any."""
    with transaction(target) as session:
        model_row = find_model(session, model)
        if model_row is None:
            return None
        circuit_id = session.scalar(
            select(Circuit.id)
            .join(Run, Circuit.run_id == Run.id)
            .join(Relation, Run.relation_id == Relation.id)
            .where(Run.model_id == model_row.id, Relation.name == relation_name)
            .order_by(Circuit.id.desc())
            .limit(1)
        )
        if circuit_id is None:
            return None
        return circuit_id, _circuit_nodes(session, circuit_id)


def lens_circuit(
    target: Engine | Session, model_name: str, relation_name: str, circuit_id: int | None
) -> tuple[int, list[str]] | None:
    """The circuit a lens analysis reads, as (id, its heads and MLPs): the one named, which must be of this
    model and relation (else CatalogueError; an unknown id, NotCatalogued), or the newest stored one (None
    when there is none)."""
    if circuit_id is None:
        return latest_circuit_nodes(target, model_name, relation_name)
    with transaction(target) as session:
        row = session.execute(
            select(Model.name, Relation.name)
            .select_from(Circuit)
            .join(Run, Circuit.run_id == Run.id)
            .join(Model, Run.model_id == Model.id)
            .join(Relation, Run.relation_id == Relation.id)
            .where(Circuit.id == circuit_id)
        ).one_or_none()
        if row is None:
            raise NotCatalogued(f"no circuit with id {circuit_id}")
        if (row[0], row[1]) != (model_name, relation_name):
            raise CatalogueError(
                f"circuit {circuit_id} is of {row[0]} on {row[1]}, not of {model_name} on {relation_name}"
            )
        return circuit_id, _circuit_nodes(session, circuit_id)
