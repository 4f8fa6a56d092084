"""`atlas models` and `atlas relations`: what can be asked for by name here."""

from __future__ import annotations

import click

from atlas.cli.common import user_errors


@click.command("models")
def list_models() -> None:
    """Models that load by name here (any Hugging Face id works where its weights can be had)."""
    from atlas.core.models import known_model_names

    for name in known_model_names():
        click.echo(name)


@click.command("relations")
@click.option("--corpus", type=click.Path(), default=None)
def list_relations(corpus: str | None) -> None:
    """Relations of a corpus (the bundled one by default)."""
    from atlas.jobs import load_relations

    with user_errors():
        for relation in load_relations(corpus).values():
            click.echo(f"{relation.name:<32} {relation.category:<12} {len(relation.facts):>5} facts")
