"""The Alembic migrations: an empty database upgrades to head, head matches the models exactly (an empty
autogenerate diff), and downgrading to base removes every table."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from atlas.db.engine import database_url, downgrade, make_engine, normalize_url, upgrade
from atlas.db.models import Base
from atlas.spec.config import Settings


def test_upgrade_matches_models_and_downgrades(empty_url: str) -> None:
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        downgrade(empty_url, "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {"alembic_version"}
        upgrade(empty_url)  # and back up again
        with engine.connect() as connection:
            assert set(Base.metadata.tables) <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_models_create_all_matches_migration_naming() -> None:
    """The models alone (create_all, only here) build the same constraint names the migration creates."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    unique = {u["name"] for u in inspect(engine).get_unique_constraints("runs")}
    assert unique == {"uq_runs_model_id_relation_id_params_key_corpus_hash_code_version"}
    assert inspect(engine).get_pk_constraint("circuit_edges")["constrained_columns"] == [
        "circuit_id",
        "writer_id",
        "reader_id",
        "port",
    ]
    Base.metadata.drop_all(engine)


def test_default_url_is_an_embedded_file(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "home" / "models", database_url="")
    url = database_url(settings)
    assert url == f"sqlite:///{tmp_path / 'home' / 'atlas.db'}"
    engine = make_engine(url)  # creates the folder
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    assert (tmp_path / "home").is_dir()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url(Settings(database_url="postgresql://u@h/db")) == "postgresql+psycopg://u@h/db"
