"""Circuits: the catalogue listing, one circuit in full, a re-cut at another size, Graphviz DOT, EAP-IG JSON.
Answers are cached until the catalogue changes (api.cache)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from api.deps import CacheDep, EngineDep
from api.errors import ERROR_RESPONSES
from api.routes.common import check_model, check_relation
from api.schemas import MAX_PAGE, Category, CircuitDetail, CircuitPage, EapGraph, Id, Method, Name, RecutView
from atlas.db import browse, queries, records, recut

router = APIRouter(prefix="/circuits", tags=["circuits"], responses=ERROR_RESPONSES)

JSON = "application/json"
CircuitId = Annotated[Id, Path(description="The circuit's id.")]


@router.get("", response_model=CircuitPage, summary="The catalogue listing")
async def list_circuits(
    engine: EngineDep,
    cache: CacheDep,
    model: Annotated[Name | None, Query(description="A model's name.")] = None,
    relation: Annotated[Name | None, Query(description="A relation's name.")] = None,
    category: Annotated[Category | None, Query()] = None,
    method: Annotated[Method | None, Query()] = None,
    after: Annotated[Id | None, Query(description="The previous page's `next`.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Response:
    """Circuits by id with their model, relation, category, method, size and discovery-split evaluation,
    filtered; keyset pages (`after` the previous page's `next`)."""

    def compute() -> dict[str, object]:
        page = queries.list_circuits(engine, model, relation, category, method, limit, after)
        if not page.items:  # a name in a page's rows is catalogued: look names up only for an empty page
            check_model(engine, model)
            check_relation(engine, relation)
        # The summaries as they are: the encoder writes a dataclass's fields (asdict would copy each deeply).
        return {"items": page.items, "next": page.next_after}

    key = ("circuits", model, relation, category, method, after, limit)
    return Response(await cache.aget(engine, key, compute), media_type=JSON)


@router.get("/{circuit_id}", response_model=CircuitDetail, summary="One circuit in full")
async def get_circuit(engine: EngineDep, cache: CacheDep, circuit_id: CircuitId) -> Response:
    """Its nodes and edges with scores, evaluations (Hit@10, faithfulness, curve), run parameters and what
    it takes to reproduce it (model weights hash, corpus hash, code version, seed)."""
    # The record stored with the circuit (atlas.db.records), served as it is.
    body = await cache.aget(engine, ("circuit", circuit_id), lambda: records.read(engine, circuit_id))
    return Response(body, media_type=JSON)


@router.get("/{circuit_id}/recut", response_model=RecutView, summary="The circuit re-cut at another size")
async def recut_circuit(
    engine: EngineDep,
    cache: CacheDep,
    circuit_id: CircuitId,
    top_n: Annotated[
        int, Query(ge=0, le=1_000_000, description="Edges (nodes, for a node-level circuit) to keep.")
    ],
) -> Response:
    """The top-n circuit from the stored score matrix (no recomputation): the n highest-|score| edges,
    pruned to input->logits paths (for node-level circuits, the n best heads and MLPs)."""
    body = await cache.aget(
        engine, ("recut", circuit_id, top_n), lambda: asdict(recut.recut(engine, circuit_id, top_n))
    )
    return Response(body, media_type=JSON)


@router.get(
    "/{circuit_id}/dot",
    summary="The circuit as Graphviz DOT",
    response_class=Response,
    responses={200: {"content": {"text/vnd.graphviz": {"schema": {"type": "string"}}}}},
)
async def circuit_dot(engine: EngineDep, cache: CacheDep, circuit_id: CircuitId) -> Response:
    """Render with `dot -Tsvg`: heads blue, MLPs orange, one row per layer, edge width by |score|."""
    body = await cache.aget(
        engine, ("dot", circuit_id), lambda: browse.circuit_dot(engine, circuit_id).encode()
    )
    return Response(body, media_type="text/vnd.graphviz")


@router.get("/{circuit_id}/eap-ig", response_model=EapGraph, summary="The circuit as EAP-IG graph JSON")
async def circuit_eap_graph(engine: EngineDep, cache: CacheDep, circuit_id: CircuitId) -> Response:
    """The format of the eap-ig library's `Graph.to_json` (load it with `Graph.from_json`): every edge of the
    model's graph with its score and whether it is in the circuit."""
    body = await cache.aget(engine, ("eap", circuit_id), lambda: browse.eap_graph_json(engine, circuit_id))
    return Response(body, media_type=JSON)
