"""Relation-level analyses, found in the catalogue or computed and stored (as `atlas.jobs.discover_and_store`
does for circuits): `hallucination` (atlas.core.hallucination), `icl` (atlas.core.icl, the paper's Table 2)
and `lens` (atlas.core.component_lens.relation_lens: where the relation's objects surface by logit lens, over
the nodes of the relation's newest stored circuit when there is one, else over every head and MLP).

The kinds and their parameters are atlas.spec.analyses's registry. Parameters are checked before the model
loads; bad ones raise `AnalysisError` (naming the field; the CLI reports it as one `error:` line) and nothing
is stored. torch is imported only when an analysis runs. A queued analysis is `atlas.tasks.analysis`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from atlas.spec.analyses import AnalysisError, make_params
from atlas.spec.corpus import Relation

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from atlas.core.models import LoadedModel


def compute(
    kind: str, model: LoadedModel, relation: Relation, params: Any, nodes: list[str] | None = None
) -> dict[str, Any]:
    """Run one analysis; its result as a JSON-able dict. `nodes`: the heads and MLPs a lens analysis reads
    (None: every one)."""
    if kind == "hallucination":
        from atlas.core.hallucination import analyze_hallucinations

        return analyze_hallucinations(model, relation, params).to_dict()
    if kind == "icl":
        from atlas.core.icl import icl_analysis

        return icl_analysis(model, relation, params).to_dict()
    if kind == "lens":
        from atlas.core.component_lens import relation_lens

        summary = relation_lens(model, relation, nodes, relation.facts[: params.max_facts], params.template)
        return {"model": model.name, "relation": relation.name, **summary.to_dict()}
    raise AnalysisError(f"no computation for analysis kind {kind!r}", field="kind")


def resolved(
    target: Engine | Session, kind: str, model_name: str, relation_name: str, params: Any
) -> tuple[Any, list[str] | None]:
    """The parameters as the analysis is stored under them, and the heads and MLPs a lens analysis reads. A
    lens analysis's circuit is resolved: the newest stored circuit of this model and relation when none was
    named (nodes None: there is none, every head and MLP is read). Torch-free."""
    if kind != "lens":
        return params, None
    from atlas.db.analyses import lens_circuit

    found = lens_circuit(target, model_name, relation_name, params.circuit_id)
    if found is None:
        return params, None
    return replace(params, circuit_id=found[0]), found[1]


def analyze_and_store(
    kind: str,
    model_name: str,
    relation: Relation,
    params: dict[str, Any] | Any | None = None,
    engine: Engine | None = None,
) -> tuple[int, bool]:
    """The stored analysis of this kind, model, relation and parameters: (its id, True) when it was already
    in the catalogue, else computed with the (cached) model, stored, and (its id, False)."""
    from atlas.db.analyses import find_analysis, store_analysis
    from atlas.jobs import cached_model, catalogue_engine

    chosen = make_params(kind, params)  # before the model loads: bad parameters fail at once
    if not relation.facts:
        raise AnalysisError(f"relation {relation.name!r} has no facts to analyze", field="relation")
    engine = engine or catalogue_engine()
    model = cached_model(model_name)
    chosen, nodes = resolved(engine, kind, model.name, relation.name, chosen)
    stored = asdict(chosen)
    existing = find_analysis(engine, kind, model, relation.name, stored)
    if existing is not None:
        return existing, True
    started = time.perf_counter()
    result = compute(kind, model, relation, chosen, nodes)
    seconds = time.perf_counter() - started
    return store_analysis(engine, kind, model, relation, stored, result, seconds), False
