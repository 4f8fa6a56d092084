"""Knowledge-edit commands for the `atlas` group: `edit` (inline, or `--enqueue` for the workers),
`edits list|show|compare` and `query edit-components`. torch loads only when an edit is computed inline.

Bad input ends with one `error:` line on stderr and exit status 2, and stores nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click

from atlas.cli.common import (
    catalogue_at,
    catalogue_errors,
    echo_json,
    fact_progress,
    fixed,
    quiet_libraries,
    url_option,
    user_errors,
)
from atlas.db.edits import DEFAULT_NEIGHBOURS, EDIT_DISCOVERY, EDIT_METHODS
from atlas.spec.json_safe import finite


@click.command("edit")
@click.option("--model", "model_name", default="smollm2-135m", show_default=True, help="Model name or HF id.")
@click.option("--relation", required=True, help="Relation whose fact is edited.")
@click.option("--subject", required=True, help="The subject of the fact to edit (one of the relation's).")
@click.option("--new-object", required=True, help="The object the edited model should give.")
@click.option("--method", default="rome", show_default=True, help=f"Edit method: {', '.join(EDIT_METHODS)}.")
@click.option("--layer", type=int, default=4, show_default=True, help="The MLP layer the edit rewrites.")
@click.option("--steps", type=int, default=None, help="Optimization steps [the method's default].")
@click.option("--lr", type=float, default=None, help="Learning rate [the method's default].")
@click.option(
    "--neighbours",
    type=int,
    default=DEFAULT_NEIGHBOURS,
    show_default=True,
    help="Other facts of the relation whose circuits are compared before and after.",
)
@click.option(
    "--top-n", type=int, default=EDIT_DISCOVERY.top_n, show_default=True, help="Edges of each fact circuit."
)
@click.option("--corpus", type=click.Path(), default=None, help="LRE-format file or folder [bundled corpus].")
@click.option("--json", "as_json", is_flag=True, help="Print the stored edit as one JSON object.")
@click.option(
    "--enqueue",
    is_flag=True,
    help="Queue the edit for the workers (needs ATLAS_BROKER_URL) and print its job.",
)
@click.option("--queue", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
def edit_command(
    model_name: str,
    relation: str,
    subject: str,
    new_object: str,
    method: str,
    layer: int,
    steps: int | None,
    lr: float | None,
    neighbours: int,
    top_n: int,
    corpus: str | None,
    as_json: bool,
    enqueue: bool,
    queue: str,
) -> None:
    """Edit one fact of a relation in a copy of a model (ROME or FT-M), measure what changed (efficacy,
    generalization, locality, the logit lens, the circuits of the fact and of neighbours before and after)
    and store it in the catalogue. The same edit already stored is shown, not redone."""
    from atlas.db.store import import_relations, transaction
    from atlas.jobs import catalogue_engine, load_relations, pick_relation
    from atlas.tasks.edit import EditJobRequest

    edit = {"method": method, "layer": layer, "steps": steps, "lr": lr}
    request = EditJobRequest(
        model_name, relation, subject, new_object, edit, replace(EDIT_DISCOVERY, top_n=top_n), neighbours
    ).normalized()
    with user_errors():
        chosen = pick_relation(load_relations(corpus), relation, corpus)
        engine = catalogue_engine()
        import_relations(engine, [chosen])
        with transaction(engine) as session:
            request.validate(session)
        if enqueue:
            from atlas.cli.enqueue import enqueue as enqueue_job

            enqueue_job(request, queue, as_json, engine=engine)
            return
    quiet_libraries()
    from atlas.db.edits import get_edit
    from atlas.edit_jobs import run_edit

    # An EditError, checked on the loaded model, is a user error too.
    with user_errors(), fact_progress(f"edit {subject}") as progress:
        stored = run_edit(engine, request, progress)
    record = get_edit(engine, stored.edit_id)
    if as_json:
        click.echo(json.dumps(finite({**record, "reused": stored.reused})))
        return
    if stored.reused:
        click.echo(f"edit {stored.edit_id}: this exact edit is already in the catalogue")
    else:
        click.echo(f"stored as edit {stored.edit_id}")
    click.echo(_describe(record))


def _describe(edit: dict[str, Any]) -> str:
    """A few lines: what was edited, the outcome, the edited fact's circuit change."""
    outcome, diff = edit["outcome"] or {}, edit["diff"]
    new, old = outcome.get("new", {}), outcome.get("old", {})
    lines = [
        f"{edit['model']} {edit['method']} layer {edit['layer']}: {edit['prompt']!r} "
        f"{edit['old_object']!r} -> {edit['new_object']!r}",
        f"efficacy {outcome.get('efficacy')} (P(new)>P(old) {outcome.get('efficacy_prob')}), generalization "
        f"{fixed(outcome.get('generalization'))}, locality {fixed(outcome.get('locality'))}",
        f"new object: rank {new.get('rank_before')} -> {new.get('rank_after')}, "
        f"P {new.get('prob_before', 0):.3g} -> {new.get('prob_after', 0):.3g}; old object: rank "
        f"{old.get('rank_before')} -> {old.get('rank_after')}, "
        f"P {old.get('prob_before', 0):.3g} -> {old.get('prob_after', 0):.3g}",
    ]
    if diff:
        lines.append(
            f"circuit: heads/MLPs {len(diff['nodes_gained'])} gained "
            f"({', '.join(diff['nodes_gained'][:8])}), "
            f"{len(diff['nodes_lost'])} lost ({', '.join(diff['nodes_lost'][:8])}); node Jaccard "
            f"{fixed(diff['node_jaccard'])}, edge Jaccard {fixed(diff['edge_jaccard'])}; "
            f"{len(diff.get('neighbours', []))} neighbour circuits compared"
        )
    else:
        lines.append("circuit: the edited fact has no same-length partner in its relation: no diff")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- reading


@click.group("edits")
def edits_group() -> None:
    """Catalogued knowledge edits."""


def _filters(function: Any) -> Any:
    for option in reversed(
        [
            click.option("--model", default=None),
            click.option("--method", default=None),
            click.option("--layer", type=int, default=None),
            url_option,
            click.option("--json", "as_json", is_flag=True),
        ]
    ):
        function = option(function)
    return function


@edits_group.command("list")
@_filters
@click.option("--relation", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--after", type=int, default=None, help="Show edits after this id (the previous page's next).")
def edits_list(
    model: str | None,
    method: str | None,
    layer: int | None,
    url: str | None,
    as_json: bool,
    relation: str | None,
    limit: int,
    after: int | None,
) -> None:
    """List edits, `--limit` per page."""
    from atlas.db.edits import list_edits

    with catalogue_errors():
        page = list_edits(catalogue_at(url), model, relation, method, layer, after, limit)
    if as_json:
        echo_json(page)
        return
    header = (
        f"{'id':>5} {'model':<14} {'relation':<24} {'method':<6} {'layer':>5} {'edit':<32} "
        f"{'efficacy':>8} {'general':>7} {'local':>6} {'nodeJ':>6}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for e in page["items"]:
        what = f"{e['subject']}: {e['old_object']} -> {e['new_object']}"[:32]
        click.echo(
            f"{e['id']:>5} {e['model']:<14} {e['relation']:<24} {e['method']:<6} {e['layer']:>5} {what:<32} "
            f"{e['efficacy']!s:>8} {fixed(e['generalization']):>7} {fixed(e['locality']):>6} "
            f"{fixed(e['node_jaccard']):>6}"
        )
    if page["next"] is not None:
        click.echo(f"more: --after {page['next']}")


@edits_group.command("show")
@click.argument("edit_id", type=int)
@url_option
@click.option("--json", "as_json", is_flag=True)
def edits_show(edit_id: int, url: str | None, as_json: bool) -> None:
    """One edit: what was edited, the outcome, the circuit change (--json: everything stored)."""
    from atlas.db.edits import get_edit

    with catalogue_errors():
        record = get_edit(catalogue_at(url), edit_id)
    if as_json:
        echo_json(record)
        return
    click.echo(f"edit {edit_id}")
    click.echo(_describe(record))
    for c in record["components"]:
        if c["change"] != "kept":
            click.echo(
                f"  {c['component']:<8} {c['change']:<7} "
                f"{fixed(c['score_before'])} -> {fixed(c['score_after'])}"
            )


@edits_group.command("compare")
@_filters
def edits_compare(
    model: str | None, method: str | None, layer: int | None, url: str | None, as_json: bool
) -> None:
    """Before vs after across edits, per model, method and layer."""
    from atlas.db.edits import edit_comparison

    with catalogue_errors():
        groups = edit_comparison(catalogue_at(url), model, method, layer)
    if as_json:
        echo_json(groups)
        return
    for g in groups:
        click.echo(
            f"{g['model']} {g['method']} layer {g['layer']}: {g['n_edits']} edits, efficacy "
            f"{fixed(g['efficacy'])}, generalization {fixed(g['generalization'])}, "
            f"locality {fixed(g['locality'])}, "
            f"node Jaccard {fixed(g['node_jaccard'])}, heads/MLPs gained {fixed(g['nodes_gained'])} lost "
            f"{fixed(g['nodes_lost'])}"
        )


@click.command("edit-components")
@_filters
def query_edit_components(
    model: str | None, method: str | None, layer: int | None, url: str | None, as_json: bool
) -> None:
    """Heads and MLPs edits change in the edited facts' circuits: how many edits gained, lost, kept each."""
    from atlas.db.edits import edit_component_changes

    with catalogue_errors():
        rows = edit_component_changes(catalogue_at(url), model, method, layer)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no edit matches")
    click.echo(f"{'model':<14} {'component':<9} {'gained':>6} {'lost':>5} {'kept':>5}")
    for r in rows:
        click.echo(f"{r['model']:<14} {r['component']:<9} {r['gained']:>6} {r['lost']:>5} {r['kept']:>5}")
