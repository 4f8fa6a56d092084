"""`atlas discover`: one relation's circuit in one model, computed inline and stored in the catalogue (or
found there), or queued for the workers with `--enqueue`. torch loads only when the circuit is computed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from atlas.cli.common import fact_progress, quiet_libraries, user_errors
from atlas.cli.summaries import circuit_document, counts_lines, table
from atlas.spec.errors import Invalid
from atlas.spec.graph import RANKINGS
from atlas.spec.json_safe import finite
from atlas.spec.memory import parse_memory
from atlas.spec.methods import DEFAULT_METHOD, METHOD_NAMES
from atlas.spec.params import (
    ABLATIONS,
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    DEFAULT_MAX_EDGE_FRACTION,
    DEFAULT_MAX_NODE_FRACTION,
    DEFAULT_SIZE_FOLDS,
    DEFAULT_TARGET_FAITHFULNESS,
    LEVELS,
    METRICS,
    DiscoveryParams,
)


def discovery_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The discovery parameters as options (`make_params` turns them into DiscoveryParams)."""
    options = [
        click.option(
            "--method",
            type=click.Choice(METHOD_NAMES),
            default=DEFAULT_METHOD,
            show_default=True,
            help="Attribution method (docs/method.md compares them).",
        ),
        click.option("--ig-steps", type=int, default=5, show_default=True, help="Integrated-gradient steps."),
        click.option("--metric", type=click.Choice(METRICS), default="logprob", show_default=True),
        click.option(
            "--target-faithfulness",
            type=float,
            default=None,
            help=f"Size the circuit as the smallest one this faithful on the discovery facts "
            f"[{DEFAULT_TARGET_FAITHFULNESS}; the default rule].",
        ),
        click.option(
            "--confidence",
            type=float,
            default=None,
            help="The target must hold on this share of bootstrap resamples of the discovery facts "
            f"[{DEFAULT_CONFIDENCE}: on the facts as drawn].",
        ),
        click.option(
            "--size-folds",
            type=int,
            default=None,
            help="Judge each size out of fold: the discovery facts in this many folds, each fold's facts "
            f"scored on the circuit the other folds' facts rank [{DEFAULT_SIZE_FOLDS}; 0: in sample].",
        ),
        click.option(
            "--max-edges",
            type=int,
            default=None,
            help=f"Largest circuit the faithfulness search may choose "
            f"[{DEFAULT_MAX_EDGE_FRACTION:.0%} of the graph's edges].",
        ),
        click.option(
            "--max-nodes",
            type=int,
            default=None,
            help=f"Node level: the search's cap in heads and MLPs [{DEFAULT_MAX_NODE_FRACTION:.0%} of them].",
        ),
        click.option(
            "--top-n", type=int, default=None, help="A fixed size instead: the n best-ranked edges."
        ),
        click.option("--threshold", type=float, default=None, help="Or every edge ranked at least this."),
        click.option(
            "--ranking",
            type=click.Choice(RANKINGS),
            default="signed",
            show_default=True,
            help="signed: edges whose ablation lowers the metric most first; absolute: the largest |score|.",
        ),
        click.option(
            "--bootstrap",
            type=int,
            default=DEFAULT_BOOTSTRAP,
            show_default=True,
            help="Resamples of the discovery facts for each member's stability (0: off).",
        ),
        click.option("--max-facts", type=int, default=32, show_default=True, help="Facts to discover from."),
        click.option(
            "--template",
            default=None,
            help="Prompt template: an index, a string with {}, or 'auto' (the one the model knows most facts "
            "under) [the first zero-shot template].",
        ),
        click.option("--ablation", type=click.Choice(ABLATIONS), default="corrupt", show_default=True),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option(
            "--level",
            type=click.Choice(LEVELS),
            default=None,
            help="Edge or node circuit [edge where sound].",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def make_params(options: dict[str, Any]) -> DiscoveryParams:
    """The options' DiscoveryParams, validated (a template given as a number is an index)."""
    template = options.get("template")
    if isinstance(template, str) and template.lstrip("-").isdigit():
        template = int(template)
    params = DiscoveryParams(
        method=options["method"],
        ig_steps=options["ig_steps"],
        metric=options["metric"],
        target_faithfulness=options.get("target_faithfulness"),
        confidence=options.get("confidence"),
        size_folds=options.get("size_folds"),
        max_edges=options.get("max_edges"),
        max_nodes=options.get("max_nodes"),
        top_n=options["top_n"],
        threshold=options["threshold"],
        ranking=options.get("ranking", "signed"),
        bootstrap=options.get("bootstrap", DEFAULT_BOOTSTRAP),
        max_facts=options["max_facts"],
        template=template,
        ablation=options["ablation"],
        batch_size=options["batch_size"],
        seed=options["seed"],
        curve=options.get("curve", True),
        known_only=not options.get("keep_unknown", False),
        level=options.get("level"),
    )
    params.validate()
    return params


@click.command()
@click.option("--model", "model_name", default="smollm2-135m", show_default=True, help="Model name or HF id.")
@click.option("--relation", required=True, help="Relation name (the file stem, e.g. country_capital_city).")
@click.option("--corpus", type=click.Path(), default=None, help="LRE-format file or folder [bundled corpus].")
@discovery_options
@click.option("--curve/--no-curve", default=True, show_default=True, help="Compute the faithfulness curve.")
@click.option("--keep-unknown", is_flag=True, help="Keep facts the model does not know (not in its top 10).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--save", type=click.Path(dir_okay=False), default=None, help="Write the circuit to a JSON file."
)
@click.option(
    "--store/--no-store", default=True, show_default=True, help="Keep the circuit in the catalogue."
)
@click.option(
    "--enqueue", is_flag=True, help="Queue the job for the workers (needs ATLAS_BROKER_URL) and print its id."
)
@click.option("--queue", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option(
    "--max-memory",
    default=None,
    help="Peak memory the run keeps to, e.g. 6GB or 512MB: facts are scored and evaluated in passes that "
    "fit it; the circuit is the same [ATLAS_MAX_MEMORY_MB, else no limit].",
)
def discover(
    model_name: str,
    relation: str,
    corpus: str | None,
    as_json: bool,
    save: str | None,
    store: bool,
    enqueue: bool,
    queue: str,
    max_memory: str | None,
    **options: Any,
) -> None:
    """Find the knowledge circuit of one relation in one model, and store it in the catalogue.

    A run with the same parameters already in the catalogue is found, not redone. With --enqueue the
    job goes to the workers instead (`atlas jobs show ID` follows it)."""
    from atlas.jobs import load_relations, pick_relation

    with user_errors():
        params = make_params(options)
        budget = None if max_memory is None else parse_memory(max_memory)
        chosen = pick_relation(load_relations(corpus), relation, corpus)
        if enqueue:
            if budget is not None:
                raise Invalid(
                    "--max-memory applies to a run computed here; workers keep to their own "
                    "ATLAS_MAX_MEMORY_MB",
                    field="max_memory",
                )
            _enqueue(model_name, chosen, params, queue, as_json)
            return
    quiet_libraries()
    from atlas.jobs import discover_and_store, run_discovery

    circuit_id: int | None = None
    with user_errors():
        with fact_progress(chosen.name) as progress:
            if store:
                stored = discover_and_store(model_name, chosen, params, progress, max_memory=budget)
                result, circuit_id = stored.result, stored.circuit_id
            else:
                result = run_discovery(model_name, chosen, params, progress, budget)
        if result is None:
            _show_stored(circuit_id, as_json, save)
            return
    summary = {**result.summary(), "circuit_id": circuit_id}
    if save:
        Path(save).write_text(json.dumps(circuit_document(result), indent=1))
    if as_json:
        click.echo(json.dumps(finite(summary)))
    else:
        if circuit_id is not None:
            click.echo(f"stored as circuit {circuit_id}")
        click.echo(table([summary]))
        click.echo(counts_lines(summary))
        if save:
            click.echo(f"circuit written to {save}")


def _enqueue(model_name: str, relation: Any, params: DiscoveryParams, queue: str, as_json: bool) -> None:
    """Store the relation in the catalogue, record the job and send its id to the workers."""
    from atlas.cli.enqueue import enqueue
    from atlas.tasks.discover import DiscoveryRequest

    enqueue(DiscoveryRequest(model_name, (relation.name,), params), queue, as_json, [relation])


def _show_stored(circuit_id: int | None, as_json: bool, save: str | None) -> None:
    """Print (and save) a circuit found in the catalogue instead of recomputing it."""
    from atlas.db.queries import circuit_detail
    from atlas.jobs import catalogue_engine

    assert circuit_id is not None
    detail = finite({**circuit_detail(catalogue_engine(), circuit_id), "reused": True})
    if save:
        Path(save).write_text(json.dumps(detail, indent=1))
    if as_json:
        click.echo(json.dumps(detail))
    else:
        click.echo(
            f"circuit {circuit_id}: this exact run is already in the catalogue "
            f"(`atlas circuits show {circuit_id}` prints it; `--no-store` recomputes)"
        )
