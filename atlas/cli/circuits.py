"""`atlas circuits list|show|recut|export`: catalogued circuits, one page or one circuit at a time."""

from __future__ import annotations

import click

from atlas.cli.common import catalogue_at, catalogue_errors, echo_json, fixed, url_option


@click.group("circuits")
def circuits_group() -> None:
    """Catalogued circuits."""


@circuits_group.command("list")
@click.option("--model", default=None)
@click.option("--relation", default=None)
@click.option("--category", default=None)
@click.option("--method", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option(
    "--after", type=int, default=None, help="Show circuits after this id (the previous page's next)."
)
@url_option
@click.option("--json", "as_json", is_flag=True)
def circuits_list(
    model: str | None,
    relation: str | None,
    category: str | None,
    method: str | None,
    limit: int,
    after: int | None,
    url: str | None,
    as_json: bool,
) -> None:
    """List circuits, `--limit` per page."""
    from atlas.db.queries import list_circuits

    with catalogue_errors():
        page = list_circuits(catalogue_at(url), model, relation, category, method, limit, after)
    if as_json:
        echo_json(page.to_dict())
        return
    header = (
        f"{'id':>5} {'model':<14} {'relation':<26} {'method':<10} {'nodes':>5} {'edges':>6} {'met':>3} "
        f"{'faithful':>8} {'held-out':>8} {'random':>7} {'Hit@10 orig':>11} {'circuit':>8} {'random':>7}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    met = {True: "yes", False: "no", None: "-"}
    for c in page.items:
        click.echo(
            f"{c.id:>5} {c.model:<14} {c.relation:<26} {c.method[:10]:<10} {c.n_nodes:>5} {c.n_edges:>6} "
            f"{met[c.target_met]:>3} {fixed(c.faithfulness):>8} {fixed(c.faithfulness_heldout):>8} "
            f"{fixed(c.faithfulness_random_heldout):>7} {fixed(c.hit_original):>11} "
            f"{fixed(c.hit_circuit):>8} {fixed(c.hit_random):>7}"
        )
    if page.next_after is not None:
        click.echo(f"more: --after {page.next_after}")


@circuits_group.command("show")
@click.argument("circuit_id", type=int)
@url_option
def circuits_show(circuit_id: int, url: str | None) -> None:
    """One circuit as JSON: summary, run, evaluations, nodes and edges with scores."""
    from atlas.db.queries import circuit_detail

    with catalogue_errors():
        echo_json(circuit_detail(catalogue_at(url), circuit_id))


@circuits_group.command("recut")
@click.argument("circuit_id", type=int)
@click.option("--top-n", type=click.IntRange(min=1), required=True, help="Edges (nodes, node level) to keep.")
@url_option
@click.option("--json", "as_json", is_flag=True)
def circuits_recut(circuit_id: int, top_n: int, url: str | None, as_json: bool) -> None:
    """The circuit at another size, re-cut from its stored score matrix (nothing recomputed)."""
    from dataclasses import asdict

    from atlas.db.recut import recut

    with catalogue_errors():
        cut = recut(catalogue_at(url), circuit_id, top_n)
    if as_json:
        echo_json(asdict(cut))
        return
    click.echo(f"circuit {circuit_id} at top-{top_n}: {cut.n_nodes} nodes, {cut.n_edges} edges")
    for edge in cut.edges[:20]:
        score = "" if edge["score"] is None else f" {edge['score']:+.4g}"
        click.echo(f"  {edge['edge']}{score}")
    if cut.n_edges > 20:
        click.echo(f"  ... {cut.n_edges - 20} more (--json for all)")


@circuits_group.command("export")
@click.argument("circuit_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["dot", "eap-ig"]), default="dot", show_default=True)
@url_option
def circuits_export(circuit_id: int, fmt: str, url: str | None) -> None:
    """The circuit as Graphviz DOT, or as the EAP-IG library's graph JSON."""
    from atlas.db.browse import circuit_dot, eap_graph_json

    with catalogue_errors():
        engine = catalogue_at(url)
        if fmt == "dot":
            click.echo(circuit_dot(engine, circuit_id))
        else:
            echo_json(eap_graph_json(engine, circuit_id))
