"""Relation-level analyses, found in the catalogue or computed and stored (as `atlas.jobs.discover_and_store`
does for circuits): `hallucination` (atlas.core.hallucination), `icl` (atlas.core.icl, the paper's Table 2)
and `lens` (atlas.core.component_lens.relation_lens: where the relation's objects surface by logit lens, over
the nodes of the relation's newest stored circuit when there is one, else over every head and MLP).

Parameters are checked before the model loads; bad ones raise `AnalysisError` (a `DiscoveryError`, which the
CLI reports as one `error:` line) and nothing is stored. torch is imported only when an analysis runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from atlas.core.corpus import Relation
from atlas.spec.params import DiscoveryError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from atlas.core.models import LoadedModel

KINDS = ("hallucination", "icl", "lens")


class AnalysisError(DiscoveryError):
    """An analysis cannot run as asked; the message says why."""


@dataclass(frozen=True)
class LensParams:
    max_facts: int = 16  # the relation's first facts, in corpus order
    template: str | int | None = None
    circuit_id: int | None = None  # whose nodes are read; None: the newest stored circuit, if any

    def validate(self) -> None:
        if self.max_facts < 1:
            raise ValueError("max_facts must be at least 1")


def params_class(kind: str) -> type[Any]:
    if kind == "hallucination":
        from atlas.core.hallucination import HallucinationParams

        return HallucinationParams
    if kind == "icl":
        from atlas.core.icl import ICLParams

        return ICLParams
    if kind == "lens":
        return LensParams
    raise AnalysisError(f"unknown analysis kind {kind!r}: one of {', '.join(KINDS)}")


def make_params(kind: str, options: dict[str, Any] | Any | None = None) -> Any:
    """The kind's parameters from a dict of options (None values: the default) or a params object, checked."""
    cls = params_class(kind)
    if options is None or isinstance(options, dict):
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = sorted(set(given) - names)
        if unknown:
            raise AnalysisError(f"unknown {kind} parameter(s): {', '.join(unknown)}")
        params = cls(**given)
    elif isinstance(options, cls):
        params = options
    else:
        raise AnalysisError(
            f"{kind} parameters must be a dict or {cls.__name__}, not {type(options).__name__}"
        )
    try:
        params.validate()
    except ValueError as error:
        raise AnalysisError(f"bad {kind} parameters: {error}") from error
    return params


def compute(kind: str, model: LoadedModel, relation: Relation, params: Any) -> dict[str, Any]:
    """Run one analysis; its result as a JSON-able dict."""
    if kind == "hallucination":
        from atlas.core.hallucination import analyze_hallucinations

        return analyze_hallucinations(model, relation, params).to_dict()
    if kind == "icl":
        from atlas.core.icl import icl_analysis

        return icl_analysis(model, relation, params).to_dict()
    raise AnalysisError(f"compute({kind!r}): lens analyses need the catalogue's circuit (analyze_and_store)")


def _lens(
    engine: Engine, model: LoadedModel, relation: Relation, params: LensParams
) -> tuple[LensParams, list[str] | None]:
    """The lens parameters with the circuit resolved (the newest stored one, when none was named), and that
    circuit's heads and MLPs (None: every one)."""
    from atlas.db import CatalogueError
    from atlas.db.analyses import latest_circuit_nodes
    from atlas.db.queries import circuit_detail

    if params.circuit_id is None:
        found = latest_circuit_nodes(engine, model, relation.name)
        if found is None:
            return params, None
        return replace(params, circuit_id=found[0]), found[1]
    detail = circuit_detail(engine, params.circuit_id)
    if (detail["model"], detail["relation"]) != (model.name, relation.name):
        raise CatalogueError(
            f"circuit {params.circuit_id} is of {detail['model']} on {detail['relation']}, "
            f"not of {model.name} on {relation.name}"
        )
    nodes = [n["node"] for n in detail["nodes"] if n["node"] not in ("input", "logits")]
    return params, nodes


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
        raise AnalysisError(f"relation {relation.name!r} has no facts to analyze")
    engine = engine or catalogue_engine()
    model = cached_model(model_name)
    nodes: list[str] | None = None
    if kind == "lens":
        chosen, nodes = _lens(engine, model, relation, chosen)
    stored = asdict(chosen)
    existing = find_analysis(engine, kind, model, relation.name, stored)
    if existing is not None:
        return existing, True
    started = time.perf_counter()
    if kind == "lens":
        from atlas.core.component_lens import relation_lens

        facts = relation.facts[: chosen.max_facts]
        summary = relation_lens(model, relation, nodes, facts, chosen.template)
        result = {"model": model.name, "relation": relation.name, **summary.to_dict()}
    else:
        result = compute(kind, model, relation, chosen)
    seconds = time.perf_counter() - started
    return store_analysis(engine, kind, model, relation, stored, result, seconds), False
