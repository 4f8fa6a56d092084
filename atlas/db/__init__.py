"""The persistent circuit catalogue: SQLAlchemy models, Alembic migrations, writes and read-side queries.

Nothing here imports torch at import time except `atlas.db.store` (which takes discovery results).
"""

from __future__ import annotations


class CatalogueError(ValueError):
    """Bad input to the catalogue; the transaction was rolled back and nothing was stored."""


__all__ = ["CatalogueError"]
