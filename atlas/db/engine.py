"""Where the catalogue lives and how to reach it: URL, engine, migrating to the newest schema (sessions:
atlas.db.session.transaction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from atlas.db import CatalogueError
from atlas.spec.config import Settings, get_settings

# Top-level `migrations/` and `alembic.ini` of the (editable-installed) project.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = PROJECT_ROOT / "migrations"


def database_url(settings: Settings | None = None) -> str:
    """ATLAS_DATABASE_URL, or an embedded SQLite file `atlas.db` next to the model cache folder."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalize_url(settings.database_url)
    return f"sqlite:///{Path(settings.cache_dir).expanduser().parent / 'atlas.db'}"


def normalize_url(url: str) -> str:
    """Plain `postgresql://` (or `postgres://`) URLs use psycopg 3, not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


SUPPORTED = "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"
DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def parse_url(url: str) -> URL:
    """The URL parsed; CatalogueError naming what is wrong when it is not one the catalogue can use (only
    SQLite and PostgreSQL through psycopg 3). The message never shows a password."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise CatalogueError(f"the database URL is not a URL; expected {SUPPORTED}") from None
    backend, _, driver = parsed.drivername.partition("+")  # read, not loaded: `bogus://` has no dialect
    driver = driver or DRIVERS.get(backend, "")
    shown = parsed.render_as_string(hide_password=True)
    if backend not in DRIVERS:
        raise CatalogueError(f"database URL {shown}: {backend!r} is not supported; expected {SUPPORTED}")
    if driver != DRIVERS[backend]:
        raise CatalogueError(
            f"database URL {shown}: driver {driver!r} is not supported; use {backend}:// ({DRIVERS[backend]})"
        )
    return parsed


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for `url` (default: `database_url()`), checked by `parse_url`. SQLite: the file's folder is
    created, foreign keys are enforced, and transactions begin explicitly (so a transaction covers every
    statement, savepoints included; `engine.execution_options(sqlite_begin="IMMEDIATE")` takes the write
    lock at once)."""
    url = normalize_url(url or database_url())
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, **kwargs)
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        folder = Path(parsed.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CatalogueError(
                f"the SQLite file's folder {folder} cannot be created: {error.strerror}"
            ) from None
    engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below start transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers ask for BEGIN IMMEDIATE (execution option sqlite_begin): two deferred transactions that
        # both read and then write would deadlock, and SQLite fails one at once instead of waiting.
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def alembic_config(url: str | None = None) -> Any:
    """Alembic's config for the project's migrations, independent of the working directory."""
    from alembic.config import Config

    if not (MIGRATIONS / "env.py").exists():
        raise RuntimeError(
            f"migrations not found at {MIGRATIONS}: install the project editable (pip install -e)"
        )
    config = (
        Config(str(PROJECT_ROOT / "alembic.ini")) if (PROJECT_ROOT / "alembic.ini").exists() else Config()
    )
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not an ini option: a URL's '%' would be read as interpolation.
    config.attributes["url"] = normalize_url(url or database_url())
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at `url` (default: `database_url()`) to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
