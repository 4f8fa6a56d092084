"""The `atlas` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from atlas.analysis_cli import register as register_analysis_commands
from atlas.db import CatalogueError
from atlas.db.cli import register as register_catalogue_commands
from atlas.edit_cli import register as register_edit_commands
from atlas.json_safe import finite
from atlas.spec.errors import AtlasError
from atlas.spec.graph import RANKINGS
from atlas.spec.methods import DEFAULT_METHOD, METHOD_NAMES
from atlas.spec.params import (
    ABLATIONS,
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    DEFAULT_MAX_EDGE_FRACTION,
    DEFAULT_MAX_NODE_FRACTION,
    DEFAULT_TARGET_FAITHFULNESS,
    LEVELS,
    METRICS,
    DiscoveryError,
    DiscoveryParams,
)

if TYPE_CHECKING:
    from atlas.core.discover import DiscoveryResult


def is_user_error(error: BaseException) -> bool:
    """Bad input (any of the project's typed errors): one line on stderr, exit status 2."""
    return isinstance(error, AtlasError)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def user_errors() -> Iterator[None]:
    """Known bad input ends with one line on stderr and exit status 2, never a traceback."""
    try:
        yield
    except Exception as error:
        if not is_user_error(error):
            raise
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


@contextmanager
def fact_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of facts scored, shown only on a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="fact", disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


@click.group()
def main() -> None:
    """Circuit Atlas: find, evaluate and compare knowledge circuits in language models."""


register_catalogue_commands(main)
register_edit_commands(main)
register_analysis_commands(main)


def discovery_options(function: Callable[..., Any]) -> Callable[..., Any]:
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
    template = options.get("template")
    if isinstance(template, str) and template.lstrip("-").isdigit():
        template = int(template)
    params = DiscoveryParams(
        method=options["method"],
        ig_steps=options["ig_steps"],
        metric=options["metric"],
        target_faithfulness=options.get("target_faithfulness"),
        confidence=options.get("confidence"),
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


@main.command()
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
def discover(
    model_name: str,
    relation: str,
    corpus: str | None,
    as_json: bool,
    save: str | None,
    store: bool,
    enqueue: bool,
    queue: str,
    **options: Any,
) -> None:
    """Find the knowledge circuit of one relation in one model, and store it in the catalogue.

    A run with the same parameters already in the catalogue is found, not redone. With --enqueue the
    job goes to the workers instead (`atlas jobs show ID` follows it)."""
    from atlas.jobs import load_relations, pick_relation

    with user_errors():
        params = make_params(options)
        chosen = pick_relation(load_relations(corpus), relation, corpus)
        if enqueue:
            _enqueue(model_name, chosen, params, queue, as_json)
            return
    _quiet_libraries()
    from atlas.jobs import discover_and_store, run_discovery

    circuit_id: int | None = None
    with user_errors():
        with fact_progress(chosen.name) as progress:
            if store:
                stored = discover_and_store(model_name, chosen, params, progress)
                result, circuit_id = stored.result, stored.circuit_id
            else:
                result = run_discovery(model_name, chosen, params, progress)
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
        click.echo(_counts_line(summary))
        if save:
            click.echo(f"circuit written to {save}")


def _enqueue(model_name: str, relation: Any, params: DiscoveryParams, queue: str, as_json: bool) -> None:
    """Store the relation in the catalogue, record the job and send its id to the workers."""
    from atlas.enqueue_cli import enqueue
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


@main.command()
@click.option("--model", "model_name", default="smollm2-135m", show_default=True)
@click.option("--max-facts", type=int, default=16, show_default=True)
@click.option("--method", type=click.Choice(METHOD_NAMES), default=DEFAULT_METHOD, show_default=True)
@click.option("--relations", default=None, help="Comma-separated relation names [all bundled ones].")
@click.option("--json", "as_json", is_flag=True)
def demo(model_name: str, max_facts: int, method: str, relations: str | None, as_json: bool) -> None:
    """Circuits for every relation of the bundled corpus, each the smallest that reaches the default
    faithfulness, a summary table, and the heads that recur across relations. Each circuit is also stored
    in the catalogue (the embedded SQLite file by default)."""
    _quiet_libraries()
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


@main.command("models")
def list_models() -> None:
    """Models that load by name here (any Hugging Face id works where its weights can be had)."""
    from atlas.core.models import known_model_names

    for name in known_model_names():
        click.echo(name)


@main.command("relations")
@click.option("--corpus", type=click.Path(), default=None)
def list_relations(corpus: str | None) -> None:
    """Relations of a corpus (the bundled one by default)."""
    from atlas.jobs import load_relations

    with user_errors():
        for relation in load_relations(corpus).values():
            click.echo(f"{relation.name:<32} {relation.category:<12} {len(relation.facts):>5} facts")


@main.command()
@click.option(
    "--queues", default=None, help="Comma-separated queues to take jobs from [gpu,cpu with a GPU, else cpu]."
)
@click.option("--concurrency", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: str | None, concurrency: int, loglevel: str) -> None:
    """Start a Celery worker that runs queued jobs (needs ATLAS_BROKER_URL and a shared ATLAS_DATABASE_URL).
    Each worker process loads a model once and keeps it; CUDA is used when the machine has it."""
    from atlas.config import get_settings

    if not get_settings().broker_url:
        click.echo(
            "error: a worker needs a broker: set ATLAS_BROKER_URL (e.g. redis://127.0.0.1:6379/0)", err=True
        )
        sys.exit(2)
    _quiet_libraries()
    from workers.app import app
    from workers.tasks import default_queues

    chosen = queues or default_queues()
    app.worker_main(
        [
            "worker",
            "--queues",
            chosen,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--hostname",
            f"atlas-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", "processes", type=int, default=1, show_default=True, help="Server processes.")
def serve(host: str, port: int, processes: int) -> None:
    """Serve the query API (OpenAPI at /openapi.json, docs at /docs) and the web pages."""
    from api.server import serve as run_server

    run_server(host, port, processes)


def circuit_document(result: DiscoveryResult) -> dict[str, Any]:
    """The circuit as a file: the summary, its nodes, and its edges with scores (EAP-IG naming)."""
    graph = result.circuit.graph
    kept = result.circuit.edges.nonzero().tolist()
    kept.sort(key=lambda wr: -abs(float(result.scores[wr[0], wr[1]])))
    edges = [{"edge": graph.edge_name(w, r), "score": float(result.scores[w, r])} for w, r in kept]
    return finite({**result.summary(), "nodes": result.circuit.nodes, "edges": edges})


def table(summaries: list[dict[str, Any]]) -> str:
    """One line per circuit, led by its size and held-out faithfulness; the paper's Hit@10 last, starred
    where a random circuit of the same size reaches it on half the facts or more (uninformative)."""
    header = (
        f"{'relation':<26} {'method':<7} {'facts':>5} {'objs':>4} {'size':>6} {'%graph':>7} {'met':>3} "
        f"{'faithful':>8} {'held-out':>8} {'random':>7}  {'top-1 orig/circ/rand':<20} "
        f"{'Hit@10 orig/circ/rand':<22}"
    )
    lines = [header, "-" * len(header)]
    starred = False
    for s in summaries:
        held = s["heldout"] or {}
        reference = held or s
        hit, top1 = reference["hit_at_10"], reference["top1"]
        star = "" if reference["hit_at_10_informative"] else "*"
        starred = starred or bool(star)
        met = {True: "yes", False: "no", None: "-"}[s["target_met"]]
        lines.append(
            f"{s['relation']:<26} {s['method'][:7]:<7} {s['n_facts']:>5} {s['answer_set']:>4} {s['size']:>6} "
            f"{_number(s['size_percent'], '.2f', 6)}% {met:>3} {_number(s['faithfulness'])} "
            f"{_number(held.get('faithfulness'))} {_number(reference['faithfulness_random'], width=7)}  "
            f"{_triple(top1):<20} {_triple(hit) + star:<22}"
        )
    notes = []
    if summaries:
        notes.append(
            f"model {summaries[0]['model']}; faithful, held-out: faithfulness on the discovery and held-out "
            "facts; random: a random circuit of the same size; top-1 and Hit@10 on held-out facts where "
            "there are any"
        )
    if starred:
        notes.append("* Hit@10 uninformative: a random circuit of the same size reaches it on half the facts")
    return "\n".join(lines + notes)


def _number(value: float | None, spec: str = ".3f", width: int = 8) -> str:
    if value is None or value != value:
        return "-".rjust(width)
    return f"{value:{spec}}".rjust(width)


def _triple(values: dict[str, float]) -> str:
    return "/".join("-" if v is None or v != v else f"{v:.2f}" for v in values.values())


def _counts_line(summary: dict[str, Any]) -> str:
    f = summary["facts"]
    line = (
        f"facts: {f['total']} in relation, {f['unpaired']} without a same-length partner; "
        f"{f['known']} of {f['checked']} checked known to the model (Hit@10); "
        f"{f['discovery']} for discovery, {f['heldout']} held out"
    )
    held = summary["heldout"]
    if held:
        hit = held["hit_at_10"]
        line += (
            f"\nheld-out: Hit@10 original {hit['original']:.3f}, circuit {hit['circuit']:.3f}, random "
            f"{hit['random']:.3f}, faithfulness {held['faithfulness']:.3f}"
        )
    if summary["curve"]:
        line += f"\nfaithfulness curve area (CPR): {summary['curve']['area']:.3f}"
    if summary.get("roles"):
        counts = summary["roles"]["counts"]
        movers = [h["name"] for h in summary["heads"] if h["role"] == "mover"]
        line += "\nhead roles: " + ", ".join(f"{role} {n}" for role, n in counts.items())
        line += f" (mover heads: {', '.join(movers) or 'none'})"
    return line + f"\nseconds: {json.dumps({k: round(v, 2) for k, v in summary['seconds'].items()})}"
