"""`atlas demo`: a circuit for every relation of the bundled corpus, stored in the catalogue, a summary table,
and the heads and MLPs that recur across the relations against the null."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from atlas.cli.common import fact_progress, quiet_libraries, user_errors
from atlas.cli.summaries import table
from atlas.db import CatalogueError
from atlas.spec.json_safe import finite
from atlas.spec.methods import DEFAULT_METHOD, METHOD_NAMES
from atlas.spec.params import DiscoveryError, DiscoveryParams

if TYPE_CHECKING:
    from atlas.core.discover import DiscoveryResult


@click.command()
@click.option("--model", "model_name", default="smollm2-135m", show_default=True)
@click.option("--max-facts", type=int, default=16, show_default=True)
@click.option("--method", type=click.Choice(METHOD_NAMES), default=DEFAULT_METHOD, show_default=True)
@click.option("--relations", default=None, help="Comma-separated relation names [all bundled ones].")
@click.option("--json", "as_json", is_flag=True)
def demo(model_name: str, max_facts: int, method: str, relations: str | None, as_json: bool) -> None:
    """Circuits for every relation of the bundled corpus, each the smallest that reaches the default
    faithfulness, a summary table, and the heads that recur across relations. Each circuit is also stored
    in the catalogue (the embedded SQLite file by default)."""
    quiet_libraries()
    from atlas.jobs import catalogue_engine, load_relations, pick_relation, run_discovery, store_result

    summaries, results = [], []
    with user_errors():
        engine = catalogue_engine()
        params = DiscoveryParams(method=method, max_facts=max_facts, curve=False)
        params.validate()
        corpus = load_relations(None)
        names = relations.split(",") if relations else list(corpus)
        for relation in [pick_relation(corpus, name.strip(), None) for name in names]:
            with fact_progress(relation.name) as progress:
                try:
                    result = run_discovery(model_name, relation, params, progress)
                except DiscoveryError as error:
                    click.echo(f"skipped {relation.name}: {error}", err=True)
                    continue
            try:
                circuit_id = store_result(engine, model_name, relation, result)
            except CatalogueError as error:  # e.g. another corpus's relation of that name is catalogued
                click.echo(f"not stored: {error}", err=True)
                circuit_id = None
            results.append(result)
            summaries.append({**result.summary(), "circuit_id": circuit_id})
            if not as_json:
                seconds = sum(result.seconds.values())
                click.echo(
                    f"{relation.name}: circuit {circuit_id}, {result.circuit.n_edges} edges "
                    f"({'target met' if result.target_met else 'target NOT met'}) in {seconds:.1f} s"
                )
    if as_json:
        click.echo(json.dumps(finite({"circuits": summaries, "recurring": _recurring(results, None)})))
        return
    click.echo("\n" + table(summaries))
    click.echo("\n" + "\n".join(_recurring_lines(results)))


def _recurring(results: list[DiscoveryResult], max_q: float | None) -> list[dict[str, Any]]:
    """Heads and MLPs recurring across the knowledge relations' circuits that met their target, against the
    null (atlas.spec.recurrence_stats); control relations' circuits only flag generic components."""
    from dataclasses import asdict

    from atlas.spec.recurrence_stats import circuit_components, recurrence_table

    met = [r for r in results if r.target_met is not False]
    if not met:
        return []
    graph = met[0].circuit.graph
    circuits = [circuit_components(graph, r.relation, r.circuit.nodes, r.circuit.level) for r in met]
    knowledge = [c for c, r in zip(circuits, met, strict=True) if r.category != "control"]
    controls = [c for c, r in zip(circuits, met, strict=True) if r.category == "control"]
    if not knowledge:
        return []
    return [asdict(row) for row in recurrence_table(graph, knowledge, controls, max_q=max_q)]


def _recurring_lines(results: list[DiscoveryResult]) -> list[str]:
    from atlas.spec.recurrence_stats import SIGNIFICANT_Q, RecurringRow, format_recurrence

    met = [r for r in results if r.target_met is not False]
    knowledge = {r.relation for r in met if r.category != "control"}
    unmet = [r.relation for r in results if r.target_met is False]
    head = (
        f"Heads and MLPs that recur across the {len(knowledge)} knowledge relations whose circuit met its "
        f"faithfulness target, more than random circuits of the same sizes would (q < {SIGNIFICANT_Q})"
    )
    if unmet:
        head += f"; left out, target not met: {', '.join(unmet)}"
    rows = [RecurringRow(**row) for row in _recurring(results, SIGNIFICANT_Q)]
    if not rows:
        return [head + ":", "  none"]
    return [head + ":", *format_recurrence(rows, len(knowledge))]
