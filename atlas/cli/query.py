"""`atlas query component|recurring|across-models|compare|overlap`: questions across catalogued circuits
(`query edit-components` is in atlas/cli/edits.py)."""

from __future__ import annotations

import click

from atlas.cli.common import catalogue_at, catalogue_errors, echo_json, fixed, significant, url_option


@click.group("query")
def query_group() -> None:
    """Questions across catalogued circuits."""


@query_group.command("component")
@click.argument("name")
@click.option("--model", default=None)
@click.option("--category", default=None)
@click.option("--method", default=None)
@url_option
def query_component(
    name: str, model: str | None, category: str | None, method: str | None, url: str | None
) -> None:
    """Where one head or MLP (a3.h1, m5) appears: relations and circuits per model, and edits (JSON)."""
    from atlas.db.browse import component_appearances

    with catalogue_errors():
        echo_json(component_appearances(catalogue_at(url), name, model, category, method))


@query_group.command("recurring")
@click.option("--model", required=True)
@click.option("--category", default=None)
@click.option("--method", default=None)
@click.option("--min-count", type=int, default=2, show_default=True, help="In at least this many relations.")
@click.option(
    "--role",
    type=click.Choice(["mover", "relation", "mix", "other"]),
    default=None,
    help="Heads of this role.",
)
@click.option("--max-q", type=float, default=None, help="Only components with a q-value at most this (0-1).")
@click.option(
    "--min-stability", type=float, default=None, help="Only components with a mean stability at least this."
)
@click.option("--exclude-generic", is_flag=True, help="Leave out components that recur in control circuits.")
@click.option("--include-unmet", is_flag=True, help="Count circuits that missed their faithfulness target.")
@url_option
@click.option("--json", "as_json", is_flag=True)
def query_recurring(
    model: str,
    category: str | None,
    method: str | None,
    min_count: int,
    role: str | None,
    max_q: float | None,
    min_stability: float | None,
    exclude_generic: bool,
    include_unmet: bool,
    url: str | None,
    as_json: bool,
) -> None:
    """Heads and MLPs of a model in the circuits of several relations, against the null: the count expected
    if each circuit were a random connected circuit of its size, enrichment, q-value (Benjamini-Hochberg),
    mean stability, plumbing and generic flags, roles (--role mover: mover heads only)."""
    from atlas.db.recurrence import recurrence_report

    with catalogue_errors():
        report = recurrence_report(
            catalogue_at(url),
            model,
            category,
            method,
            min_count,
            role,
            min_stability=min_stability,
            max_q=max_q,
            exclude_generic=exclude_generic,
            include_unmet=include_unmet,
        )
    if as_json:
        echo_json(report.to_dict())
        return
    left_out = f" ({report.n_unmet} left out: target not met)" if report.n_unmet else ""
    controls = ", ".join(report.controls) or "none"
    click.echo(
        f"{model}: {report.n_relations} relations, {report.n_circuits} circuits counted{left_out}; "
        f"controls: {controls}"
    )
    if not report.components:
        click.echo(f"no component of {model!r} passes the filters (in {min_count} or more relations)")
        return
    click.echo(
        f"{'component':<9} {'count':>5} {'expected':>8} {'enrich':>6} {'q':>8} {'stable':>6}  "
        f"{'flags':<16} relations"
    )
    for c in report.components:
        flags = ",".join(name for name, on in (("plumbing", c.plumbing), ("generic", c.generic)) if on)
        relations = "all" if c.n_relations == report.n_relations else ", ".join(c.relations)
        click.echo(
            f"{c.component:<9} {c.n_relations:>5} {fixed(c.expected, 2):>8} {fixed(c.enrichment, 2):>6} "
            f"{significant(c.q_value):>8} {fixed(c.mean_stability, 2):>6}  {flags or '-':<16} {relations}"
        )


@query_group.command("across-models")
@click.option(
    "--bins", type=click.IntRange(min=1), default=10, show_default=True, help="Relative-depth bins."
)
@click.option("--min-models", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--category", default=None)
@click.option("--method", default=None)
@click.option("--role", type=click.Choice(["mover", "relation", "mix", "other"]), default=None)
@url_option
@click.option("--json", "as_json", is_flag=True)
def query_across_models(
    bins: int,
    min_models: int,
    category: str | None,
    method: str | None,
    role: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Heads and MLPs in the circuits of several models, matched by kind and relative depth (and role)."""
    from dataclasses import asdict

    from atlas.db.cross_model import components_across_models

    with catalogue_errors():
        found = components_across_models(
            catalogue_at(url), bins=bins, min_models=min_models, category=category, method=method, role=role
        )
    if as_json:
        echo_json([{**asdict(g), "n_models": g.n_models} for g in found])
        return
    if not found:
        click.echo(f"no kind and depth of component is in the circuits of {min_models} or more models")
    for g in found:
        depth = f"{g.depth_from:.2f}-{g.depth_to:.2f}"
        click.echo(
            f"{g.kind:<5} depth {depth}  {g.n_models} models, {g.n_circuits:>4} circuits  "
            + ", ".join(g.models)
        )


@query_group.command("compare")
@click.argument("ids", type=int, nargs=-1, required=True)
@url_option
@click.option("--json", "as_json", is_flag=True)
def query_compare(ids: tuple[int, ...], url: str | None, as_json: bool) -> None:
    """Shared nodes and edges of two or more circuits, and their Jaccard indices."""
    from atlas.db.queries import compare_circuits

    with catalogue_errors():
        result = compare_circuits(catalogue_at(url), list(ids))
    if as_json:
        echo_json(result.to_dict())
        return
    for c in result.circuits:
        click.echo(f"{c.id:>5} {c.model} {c.relation} ({c.method}): {c.n_nodes} nodes, {c.n_edges} edges")
    click.echo(f"node Jaccard {result.node_jaccard:.3f}, edge Jaccard {result.edge_jaccard:.3f}")
    click.echo(f"shared nodes ({len(result.shared_nodes)}): {', '.join(result.shared_nodes)}")
    click.echo(f"shared edges ({len(result.shared_edges)}): {', '.join(result.shared_edges)}")


@query_group.command("overlap")
@click.option("--model", required=True)
@click.option("--category", default=None)
@click.option("--method", default=None)
@url_option
@click.option("--json", "as_json", is_flag=True)
def query_overlap(
    model: str, category: str | None, method: str | None, url: str | None, as_json: bool
) -> None:
    """Node and edge Jaccard between every pair of a model's circuits."""
    from atlas.db.queries import overlap_matrix

    with catalogue_errors():
        result = overlap_matrix(catalogue_at(url), model, category, method)
    if as_json:
        echo_json(result.to_dict())
        return
    ids = [c.id for c in result.circuits]
    click.echo("node Jaccard (lower left) / edge Jaccard (upper right)")
    click.echo(" " * 6 + "".join(f"{i:>7}" for i in ids))
    for a, row_id in enumerate(ids):
        cells = [
            result.node_jaccard[a][b] if b < a else result.edge_jaccard[a][b] if b > a else 1.0
            for b in range(len(ids))
        ]
        click.echo(f"{row_id:>6}" + "".join(f"{v:>7.3f}" for v in cells))
