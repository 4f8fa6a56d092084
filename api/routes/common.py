"""What the routes share: names that must exist in the catalogue (else 404 with the names that do), and a
dataclass's fields for the JSON encoder."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import Engine

from api.errors import ApiError
from atlas.db import browse


def _hint(engine: Engine, what: str) -> str:
    names = browse.known_names(engine, what)
    if not names:
        return f"the catalogue has no {what}s yet"
    more = ", ..." if len(names) >= 10 else ""
    return f"catalogued {what}s: {', '.join(names)}{more} (GET /{what}s)"


def check_model(engine: Engine, model: str | None) -> None:
    if model is not None and not browse.model_exists(engine, model):
        raise ApiError(404, f"unknown model {model!r}: {_hint(engine, 'model')}")


def check_relation(engine: Engine, relation: str | None) -> None:
    if relation is not None and not browse.relation_exists(engine, relation):
        raise ApiError(404, f"unknown relation {relation!r}: {_hint(engine, 'relation')}")


def shallow(value: Any) -> dict[str, Any]:
    """A dataclass's fields as they are: the encoder (api.cache.encode) writes nested dataclasses itself,
    while `dataclasses.asdict` deep-copies every list and dict in them (most of a recurring answer's CPU)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}
