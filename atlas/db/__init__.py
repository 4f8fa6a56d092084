"""The persistent circuit catalogue: SQLAlchemy models, Alembic migrations, writes and read-side queries.

Nothing here imports torch at import time except `atlas.db.store` (which takes discovery results).
"""

from __future__ import annotations

from atlas.spec.errors import AtlasError, Conflict, NotFound


class CatalogueError(AtlasError):
    """Bad input to the catalogue; the transaction was rolled back and nothing was stored."""


class NotCatalogued(CatalogueError, NotFound):
    """A model, relation, circuit, component, edit or analysis asked for by name or id is not catalogued."""


class CatalogueConflict(CatalogueError, Conflict):
    """The request contradicts what the catalogue holds (a relation of that name with other content)."""


__all__ = ["CatalogueConflict", "CatalogueError", "NotCatalogued"]
