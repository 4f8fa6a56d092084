"""The persistent circuit catalogue: SQLAlchemy models, Alembic migrations, writes and read-side queries.

Nothing here imports torch or atlas.core (pyproject.toml's import contracts check it): `atlas.db.store` takes
discovery results and reads their tensors through their methods and numpy.
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
