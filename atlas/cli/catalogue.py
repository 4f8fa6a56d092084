"""`atlas db upgrade|fill-records|url` and `atlas corpus import`: the catalogue's schema, its circuits' API
records and the relations stored in it."""

from __future__ import annotations

import click

from atlas.cli.common import catalogue_at, catalogue_errors, echo_json, url_option


@click.group("db")
def db_group() -> None:
    """The circuit catalogue's database."""


@db_group.command("upgrade")
@url_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(url: str | None, revision: str) -> None:
    """Create or migrate the catalogue schema."""
    from atlas.db.engine import database_url, upgrade

    with catalogue_errors():
        upgrade(url or database_url(), revision)
    click.echo(f"catalogue at {_redact(url or database_url())} is at revision {revision}")


@db_group.command("fill-records")
@url_option
def db_fill_records(url: str | None) -> None:
    """Store the API records of circuits stored before migration 0009 (served built on read until then)."""
    from atlas.db.records import fill_missing

    with catalogue_errors():
        filled = fill_missing(catalogue_at(url))
    click.echo(f"circuit records stored: {filled}")


@db_group.command("url")
def db_url() -> None:
    """Print the catalogue's database URL (password hidden)."""
    from atlas.db.engine import database_url

    click.echo(_redact(database_url()))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group("corpus")
def corpus_group() -> None:
    """Relations and facts in the catalogue."""


@corpus_group.command("import")
@click.argument("path", type=click.Path())
@url_option
@click.option("--json", "as_json", is_flag=True)
def corpus_import(path: str, url: str | None, as_json: bool) -> None:
    """Store the relations (and facts) of an LRE-format file or folder."""
    from atlas.db.store import import_relations
    from atlas.spec.corpus import load_corpus

    with catalogue_errors():
        counts = import_relations(catalogue_at(url), load_corpus(path).values())
    if as_json:
        echo_json(counts)
    else:
        click.echo(
            f"{counts['added']} relations added ({counts['facts']} facts), {counts['unchanged']} unchanged"
        )
