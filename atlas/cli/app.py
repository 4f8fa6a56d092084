"""The `atlas` group, with every command module's commands attached (adding one: docs/architecture.md)."""

from __future__ import annotations

import click

from atlas.cli.analyses import analyses_group, analyze_group
from atlas.cli.catalogue import corpus_group, db_group
from atlas.cli.circuits import circuits_group
from atlas.cli.demo import demo
from atlas.cli.discover import discover
from atlas.cli.edits import edit_command, edits_group, query_edit_components
from atlas.cli.inventory import list_models, list_relations
from atlas.cli.jobs import jobs_group
from atlas.cli.query import query_group
from atlas.cli.services import serve, worker


@click.group()
def main() -> None:
    """Circuit Atlas: find, evaluate and compare knowledge circuits in language models."""


COMMANDS = (
    discover,
    demo,
    list_models,
    list_relations,
    db_group,
    corpus_group,
    circuits_group,
    query_group,
    jobs_group,
    edit_command,
    edits_group,
    analyze_group,
    analyses_group,
    worker,
    serve,
)

for _command in COMMANDS:
    main.add_command(_command)
query_group.add_command(query_edit_components)  # `atlas query edit-components`, with the edits' commands
