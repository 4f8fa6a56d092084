"""Alembic environment of the circuit catalogue: the URL comes from `config.attributes["url"]` (set by
atlas.db.engine.upgrade), else from ATLAS_DATABASE_URL / the embedded SQLite default."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from atlas.db.engine import database_url, make_engine
from atlas.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes.get("url") or database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.attributes.get("url") or database_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    # SQLite changes a table's constraints by copying it: dropping the old copy would cascade to every row
    # that refers to it. Foreign keys are off while migrations run (a pragma that only takes effect outside
    # a transaction, so it goes straight to the driver), then checked and back on.
    driver = connection.connection.driver_connection if sqlite and not connection.in_transaction() else None
    if driver is not None:
        driver.execute("PRAGMA foreign_keys=OFF")
    try:
        with context.begin_transaction():
            context.run_migrations()
            if driver is not None:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows that refer to missing ones: {broken[:5]}")
    finally:
        if driver is not None:
            driver.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
