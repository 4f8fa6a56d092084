"""Components across circuits: heads and MLPs that recur across a model's relations, one component's
appearances, the comparison of circuits and the overlap matrix of a model's circuits. Cached until the
catalogue changes (api.cache)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from api.deps import CacheDep, EngineDep
from api.errors import ERROR_RESPONSES
from api.routes.common import check_model, shallow
from api.schemas import (
    Category,
    ComparisonView,
    ComponentName,
    ComponentView,
    Id,
    Method,
    Name,
    OverlapView,
    RecurringView,
)
from atlas.db import browse, queries, recurrence

router = APIRouter(tags=["components"], responses=ERROR_RESPONSES)

JSON = "application/json"
ModelQuery = Annotated[Name, Query(description="A model's name (GET /models).")]
CategoryQuery = Annotated[Category | None, Query(description="Only circuits of relations of this category.")]
MethodQuery = Annotated[Method | None, Query(description="Only circuits found with this method.")]


@router.get("/components/recurring", response_model=RecurringView, summary="Heads and MLPs that recur")
async def recurring(
    engine: EngineDep,
    cache: CacheDep,
    model: ModelQuery,
    category: CategoryQuery = None,
    method: MethodQuery = None,
    min_count: Annotated[int, Query(ge=1, le=100_000, description="In at least this many relations.")] = 2,
    role: Annotated[
        Literal["mover", "relation", "mix", "other"] | None,
        Query(description="Only heads with this role in the circuit (mover heads that recur, ...)."),
    ] = None,
    max_q: Annotated[
        float | None, Query(ge=0, le=1, description="Only components with a q-value at most this.")
    ] = None,
    min_stability: Annotated[
        float | None, Query(ge=0, le=1, description="Only components with a mean stability at least this.")
    ] = None,
    exclude_generic: Annotated[
        bool, Query(description="Leave out components that recur in control circuits too.")
    ] = False,
    include_unmet: Annotated[
        bool, Query(description="Count circuits that missed their faithfulness target too.")
    ] = False,
) -> Response:
    """Heads and MLPs of the model in the circuits of at least `min_count` relations, against the null:
    per component the relations and their count, the count expected if every circuit were a random connected
    circuit of its own size in the same graph, enrichment, the one-sided Poisson-binomial p-value and its
    Benjamini-Hochberg q-value across the model's components, mean bootstrap stability, the plumbing and
    generic flags and the heads' roles; most significant first. Counted: circuits that met their faithfulness
    target or were cut at a fixed size (`include_unmet` for all); control relations set the generic flag."""

    def compute() -> dict[str, object]:
        report = recurrence.recurrence_report(
            engine,
            model,
            category,
            method,
            min_count,
            role,
            min_stability=min_stability,
            max_q=max_q,
            exclude_generic=exclude_generic,
            include_unmet=include_unmet,
        )
        if not report.n_circuits and not report.controls:  # no circuit read: is the model catalogued?
            check_model(engine, model)
        return {
            "category": category,
            "method": method,
            "min_count": min_count,
            "role": role,
            "max_q": max_q,
            "min_stability": min_stability,
            "exclude_generic": exclude_generic,
            "include_unmet": include_unmet,
            **shallow(report),
        }

    key = (
        "recurring", model, category, method, min_count, role, max_q, min_stability, exclude_generic,
        include_unmet,
    )  # fmt: skip
    body = await cache.aget(engine, key, compute)
    return Response(body, media_type=JSON)


@router.get("/components/{name}", response_model=ComponentView, summary="One component's appearances")
async def component(
    engine: EngineDep,
    cache: CacheDep,
    name: Annotated[ComponentName, Path(description="A head `a3.h1` or an MLP `m5`.")],
    model: Annotated[Name | None, Query(description="Only this model.")] = None,
    category: CategoryQuery = None,
    method: MethodQuery = None,
) -> Response:
    """Where one head or MLP sits in the catalogue: per model (with its relative depth) the relations whose
    circuits contain it and those circuits with the node's score; and the edits whose edited model has
    circuits containing it."""

    def compute() -> dict[str, object]:
        check_model(engine, model)
        return browse.component_appearances(engine, name, model, category, method)

    body = await cache.aget(engine, ("component", name, model, category, method), compute)
    return Response(body, media_type=JSON)


@router.get("/compare", response_model=ComparisonView, summary="Compare two or more circuits")
async def compare(
    engine: EngineDep,
    cache: CacheDep,
    ids: Annotated[
        list[Id], Query(min_length=2, max_length=50, description="Circuit ids, repeated: `?ids=3&ids=4`.")
    ],
) -> Response:
    """Heads and MLPs and edges shared by all the circuits, Jaccard of their node sets and of their edge
    sets, over all of them and per pair."""
    unique = tuple(dict.fromkeys(ids))
    body = await cache.aget(
        engine, ("compare", unique), lambda: shallow(queries.compare_circuits(engine, unique))
    )
    return Response(body, media_type=JSON)


@router.get("/overlap", response_model=OverlapView, summary="Overlap matrix of a model's circuits")
async def overlap(
    engine: EngineDep,
    cache: CacheDep,
    model: ModelQuery,
    category: CategoryQuery = None,
    method: MethodQuery = None,
) -> Response:
    """Node and edge Jaccard between every pair of the model's circuits (rows in circuit id order)."""

    def compute() -> dict[str, object]:
        check_model(engine, model)
        return queries.overlap_matrix(engine, model, category, method).to_dict()

    body = await cache.aget(engine, ("overlap", model, category, method), compute)
    return Response(body, media_type=JSON)
