"""Analysis commands for the `atlas` group: `analyze hallucination|icl|lens` (computed inline, or found in the
catalogue when the same analysis is stored, or with `--enqueue` queued for the workers) and
`analyses list|show`. torch is imported only by the `analyze` commands, when they compute.

Bad input (an unknown relation or model, bad parameters) ends with one `error:` line on stderr, exit status 2,
and stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from atlas.cli.common import (
    catalogue_at,
    catalogue_errors,
    echo_json,
    fixed,
    quiet_libraries,
    url_option,
    user_errors,
)
from atlas.db.jobs import QUEUES
from atlas.spec.analyses import ANALYSIS_KINDS
from atlas.spec.methods import METHOD_NAMES as METHODS


def _analyze(kind: str, options: dict[str, Any]) -> None:
    """Pick the relation, check the parameters (before any model loads), then find or compute and store the
    analysis, and show it; or, with --enqueue, queue it for the workers."""
    from atlas.jobs import load_relations, pick_relation
    from atlas.spec.analyses import make_params

    model_name, relation, corpus = options.pop("model_name"), options.pop("relation"), options.pop("corpus")
    url, as_json = options.pop("url"), options.pop("as_json")
    enqueue, queue = options.pop("enqueue"), options.pop("queue")
    with catalogue_errors(), user_errors():
        params = make_params(kind, options)
        chosen = pick_relation(load_relations(corpus), relation, corpus)
        if enqueue:
            from atlas.cli.enqueue import enqueue as enqueue_job
            from atlas.jobs import catalogue_engine
            from atlas.tasks.analysis import AnalysisRequest

            request = AnalysisRequest(model_name, chosen.name, kind, asdict(params))
            enqueue_job(request, queue, as_json, [chosen], catalogue_engine(url))
            return
    quiet_libraries()
    from atlas.analyses import analyze_and_store
    from atlas.db.analyses import get_analysis
    from atlas.jobs import catalogue_engine

    with catalogue_errors(), user_errors():
        engine = catalogue_engine(url)
        analysis_id, reused = analyze_and_store(kind, model_name, chosen, params, engine)
        stored = get_analysis(engine, analysis_id)
    if as_json:
        echo_json({**stored, "reused": reused})
        return
    verb = "found in the catalogue" if reused else f"computed in {stored['seconds']:.1f} s and stored"
    click.echo(f"analysis {analysis_id} ({kind}, {stored['model']}, {stored['relation']}): {verb}")
    _describe(stored)


def _describe(stored: dict[str, Any]) -> None:
    """A short human summary of a stored analysis."""
    result, kind = stored.get("result") or {}, stored["kind"]
    if kind == "hallucination":
        click.echo(
            f"correct {result.get('n_correct')}, wrong {result.get('n_wrong')} "
            f"(of {result.get('n_checked')} facts checked; correct = the object's first token is the top-1)"
        )
        wrong_nodes = (result.get("wrong_circuit") or {}).get("nodes") or []
        correct_nodes = (result.get("correct_circuit") or {}).get("nodes") or []
        click.echo(
            f"circuit nodes: wrong {len(wrong_nodes)}, correct {len(correct_nodes)}; "
            f"node Jaccard {fixed(result.get('node_jaccard'))}, "
            f"edge Jaccard {fixed(result.get('edge_jaccard'))}"
        )
        pushers = [f"{p['name']} ({p['push']:+.3f})" for p in (result.get("pushers") or [])[:5]]
        click.echo(f"top pushers of the wrong answer (attribution): {', '.join(pushers) or '-'}")
        click.echo(f"top pushers (lens rank): {', '.join((result.get('by_lens') or [])[:5]) or '-'}")
        wrong = [o for o in result.get("outcomes") or [] if not o.get("correct")][:3]
        if wrong:
            examples = "; ".join(f"{o['subject']}: {o['prediction'].strip()!r}" for o in wrong)
            click.echo(f"wrong answers, e.g. {examples}")
    elif kind == "icl":
        header = (
            f"{'facts':>5} {'ICL heads':>9} {'zero-shot':>9} {'original (ICL)':>14} "
            f"{'ICL heads ablated':>17} {'random heads ablated':>20}"
        )
        click.echo(header)
        click.echo("-" * len(header))
        click.echo(
            f"{result.get('n_facts', 0):>5} {len(result.get('icl_only_heads') or []):>9} "
            f"{fixed(result.get('prob_zero_shot')):>9} {fixed(result.get('prob_original')):>14} "
            f"{fixed(result.get('prob_icl_ablated')):>17} {fixed(result.get('prob_random_ablated')):>20}"
        )
        click.echo(f"ICL heads: {', '.join(result.get('icl_only_heads') or []) or '-'}")
        if not result.get("n_facts"):
            click.echo("no fact has its object in the top 10 with demonstrations (try --keep-unknown)")
    else:
        circuit = stored["params"].get("circuit_id")
        over = f"circuit {circuit}'s nodes" if circuit is not None else "every head and MLP"
        click.echo(
            f"over {over}, {result.get('n_prompts')} prompts: first component with the object at median rank "
            f"1: {result.get('first_top1') or '-'}; lowest median rank: {result.get('best') or '-'}; "
            f"residual rank 1 after layer {result.get('first_top1_layer')}"
        )


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--model", "model_name", default="smollm2-135m", show_default=True),
            click.option("--relation", required=True, help="Relation name (e.g. country_capital_city)."),
            click.option("--corpus", type=click.Path(), default=None, help="LRE file or folder [bundled]."),
            click.option("--max-facts", type=int, default=None, help="Facts per circuit [16]."),
            url_option,
            click.option("--json", "as_json", is_flag=True, help="Print the stored analysis as JSON."),
            click.option(
                "--enqueue",
                is_flag=True,
                help="Queue the analysis for the workers (needs ATLAS_BROKER_URL) and print its job.",
            ),
            click.option("--queue", type=click.Choice(QUEUES), default="cpu", show_default=True),
        ]
    ):
        function = option(function)
    return function


def _attribution(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--method", type=click.Choice(METHODS), default=None, help="[eap]"),
            click.option("--seed", type=int, default=None, help="[0]"),
            click.option("--batch-size", type=int, default=None, help="[8]"),
        ]
    ):
        function = option(function)
    return function


@click.group("analyze")
def analyze_group() -> None:
    """Relation-level analyses of a model, computed inline (or queued with --enqueue) and stored in the
    catalogue."""


@analyze_group.command("hallucination")
@_common
@_attribution
@click.option("--top-n", type=int, default=None, help="Edges per circuit [300].")
@click.option(
    "--max-checked", type=int, default=None, help="Facts checked for right and wrong answers [200]."
)
def analyze_hallucination(**options: Any) -> None:
    """The wrong answers' circuit against the correct facts' circuit, and what pushes the wrong answers."""
    _analyze("hallucination", options)


@analyze_group.command("icl")
@_common
@_attribution
@click.option("--k", type=int, default=None, help="Demonstrations [3].")
@click.option("--top-n", type=int, default=None, help="Heads and MLPs per (node-level) circuit [30].")
@click.option("--n-random", type=int, default=None, help="Random head sets for the baseline [5].")
@click.option("--ablation", default=None, help="Head ablation: mean or zero [mean].")
@click.option("--keep-unknown", is_flag=True, help="Also facts not in the top 10 with demonstrations.")
def analyze_icl(keep_unknown: bool, **options: Any) -> None:
    """Zero-shot vs k-shot circuits and the Table 2 check (ICL heads ablated against random heads)."""
    _analyze("icl", {**options, "known_only": False if keep_unknown else None})


@analyze_group.command("lens")
@_common
@click.option("--circuit", "circuit_id", type=int, default=None, help="Read this circuit's nodes [newest].")
def analyze_lens(**options: Any) -> None:
    """Where the relation's objects surface by logit lens (over the stored circuit's nodes, if any)."""
    _analyze("lens", options)


@click.group("analyses")
def analyses_group() -> None:
    """Stored analyses."""


@analyses_group.command("list")
@click.option("--model", default=None)
@click.option("--relation", default=None)
@click.option("--kind", type=click.Choice(ANALYSIS_KINDS), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option(
    "--after", type=int, default=None, help="Show analyses after this id (the previous page's next)."
)
@url_option
@click.option("--json", "as_json", is_flag=True)
def analyses_list(
    model: str | None,
    relation: str | None,
    kind: str | None,
    limit: int,
    after: int | None,
    url: str | None,
    as_json: bool,
) -> None:
    """List stored analyses, `--limit` per page."""
    from atlas.db.analyses import list_analyses

    with catalogue_errors():
        page = list_analyses(catalogue_at(url), model, relation, kind, after, limit)
    if as_json:
        echo_json(page)
        return
    header = f"{'id':>5} {'kind':<13} {'model':<14} {'relation':<26} summary"
    click.echo(header)
    click.echo("-" * len(header))
    for item in page["items"]:
        summary = ", ".join(f"{k} {_short(v)}" for k, v in item["summary"].items())
        click.echo(f"{item['id']:>5} {item['kind']:<13} {item['model']:<14} {item['relation']:<26} {summary}")
    if page["next"] is not None:
        click.echo(f"more: --after {page['next']}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return fixed(value)
    if isinstance(value, list):
        return "/".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


@analyses_group.command("show")
@click.argument("analysis_id", type=int)
@url_option
@click.option("--json", "as_json", is_flag=True, help="The whole stored analysis, result included.")
def analyses_show(analysis_id: int, url: str | None, as_json: bool) -> None:
    """One stored analysis: a summary, or everything with --json."""
    from atlas.db.analyses import get_analysis

    with catalogue_errors():
        stored = get_analysis(catalogue_at(url), analysis_id)
    if as_json:
        echo_json(stored)
        return
    click.echo(
        f"analysis {stored['id']} ({stored['kind']}, {stored['model']}, {stored['relation']}), "
        f"stored {stored['created_at']}, code {stored['code_version']}"
    )
    click.echo("params: " + ", ".join(f"{k}={v}" for k, v in stored["params"].items()))
    _describe(stored)
