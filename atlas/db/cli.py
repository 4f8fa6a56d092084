"""Catalogue commands for the `atlas` group: `db upgrade`, `corpus import`, `circuits list|show`,
`query recurring|compare|overlap`. Attach with `register(main)`. Nothing heavy (torch) is imported here.

Bad input ends with one `error:` line on stderr and exit status 2, as in the rest of the CLI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from atlas.db import CatalogueError
from atlas.json_safe import finite


@contextmanager
def _errors() -> Iterator[None]:
    from atlas.core.corpus import CorpusError

    try:
        yield
    except (CatalogueError, CorpusError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except (OperationalError, ProgrammingError) as error:
        first = str(error.orig or error).strip().splitlines()[0]
        schema = isinstance(error, ProgrammingError) or "no such table" in first or "no such column" in first
        hint = " (run `atlas db upgrade` first?)" if schema else ""  # not for a database that is unreachable
        click.echo(f"error: database: {first}{hint}", err=True)
        sys.exit(2)


def _engine(url: str | None) -> Engine:
    from atlas.db.engine import make_engine

    return make_engine(url)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(finite(value), indent=2, ensure_ascii=False))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


url_option = click.option(
    "--database-url",
    "url",
    default=None,
    help="Database URL [ATLAS_DATABASE_URL, else the embedded SQLite file].",
)


@click.group("db")
def db_group() -> None:
    """The circuit catalogue's database."""


@db_group.command("upgrade")
@url_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(url: str | None, revision: str) -> None:
    """Create or migrate the catalogue schema."""
    from atlas.db.engine import database_url, upgrade

    with _errors():
        upgrade(url or database_url(), revision)
    click.echo(f"catalogue at {_redact(url or database_url())} is at revision {revision}")


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
    from atlas.core.corpus import load_corpus
    from atlas.db.store import import_relations

    with _errors():
        counts = import_relations(_engine(url), load_corpus(path).values())
    if as_json:
        _echo_json(counts)
    else:
        click.echo(
            f"{counts['added']} relations added ({counts['facts']} facts), {counts['unchanged']} unchanged"
        )


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

    with _errors():
        page = list_circuits(_engine(url), model, relation, category, method, limit, after)
    if as_json:
        _echo_json(page.to_dict())
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
            f"{met[c.target_met]:>3} {_fmt(c.faithfulness):>8} {_fmt(c.faithfulness_heldout):>8} "
            f"{_fmt(c.faithfulness_random_heldout):>7} {_fmt(c.hit_original):>11} {_fmt(c.hit_circuit):>8} "
            f"{_fmt(c.hit_random):>7}"
        )
    if page.next_after is not None:
        click.echo(f"more: --after {page.next_after}")


@circuits_group.command("show")
@click.argument("circuit_id", type=int)
@url_option
def circuits_show(circuit_id: int, url: str | None) -> None:
    """One circuit as JSON: summary, run, evaluations, nodes and edges with scores."""
    from atlas.db.queries import circuit_detail

    with _errors():
        _echo_json(circuit_detail(_engine(url), circuit_id))


@circuits_group.command("recut")
@click.argument("circuit_id", type=int)
@click.option("--top-n", type=click.IntRange(min=1), required=True, help="Edges (nodes, node level) to keep.")
@url_option
@click.option("--json", "as_json", is_flag=True)
def circuits_recut(circuit_id: int, top_n: int, url: str | None, as_json: bool) -> None:
    """The circuit at another size, re-cut from its stored score matrix (nothing recomputed)."""
    from dataclasses import asdict

    from atlas.db.recut import recut

    with _errors():
        cut = recut(_engine(url), circuit_id, top_n)
    if as_json:
        _echo_json(asdict(cut))
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

    with _errors():
        engine = _engine(url)
        if fmt == "dot":
            click.echo(circuit_dot(engine, circuit_id))
        else:
            _echo_json(eap_graph_json(engine, circuit_id))


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

    with _errors():
        _echo_json(component_appearances(_engine(url), name, model, category, method))


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

    with _errors():
        report = recurrence_report(
            _engine(url),
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
        _echo_json(report.to_dict())
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
            f"{c.component:<9} {c.n_relations:>5} {_fmt(c.expected, 2):>8} {_fmt(c.enrichment, 2):>6} "
            f"{_fmt_p(c.q_value):>8} {_fmt(c.mean_stability, 2):>6}  {flags or '-':<16} {relations}"
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

    with _errors():
        found = components_across_models(
            _engine(url), bins=bins, min_models=min_models, category=category, method=method, role=role
        )
    if as_json:
        _echo_json([{**asdict(g), "n_models": g.n_models} for g in found])
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

    with _errors():
        result = compare_circuits(_engine(url), list(ids))
    if as_json:
        _echo_json(result.to_dict())
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

    with _errors():
        result = overlap_matrix(_engine(url), model, category, method)
    if as_json:
        _echo_json(result.to_dict())
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


@click.group("jobs")
def jobs_group() -> None:
    """Queued and finished jobs, with their progress."""


def _job_line(job: dict[str, Any]) -> str:
    p = job["progress"]
    request = job["request"]
    relations = ",".join(request.get("relations") or [request.get("relation", "")])
    facts = f" facts {p['facts_done']}/{p['facts_total']}" if p["facts_total"] else ""
    current = f" at {p['current_relation']}" if p["current_relation"] and job["status"] == "running" else ""
    stored = {"circuits": job["circuit_ids"], "edits": job["edit_ids"], "analyses": job["analysis_ids"]}
    outcome = "".join(f" {name} {ids}" for name, ids in stored.items() if ids)
    error = f" error: {job['error']}" if job["error"] else ""
    return (
        f"job {job['id']:>5} {job['status']:<9} {job['model']} [{relations}] relations "
        f"{p['relations_done']}/{p['relations_total']}{current}{facts}{outcome}{error}"
    )


@jobs_group.command("show")
@click.argument("job_id", type=int)
@url_option
@click.option("--json", "as_json", is_flag=True)
def jobs_show(job_id: int, url: str | None, as_json: bool) -> None:
    """One job: what was asked, its status and progress, what it stored (circuits, edits, analyses) or its
    error."""
    from atlas.db.jobs import get_job

    with _errors():
        job = get_job(_engine(url), job_id)
    if as_json:
        _echo_json(job)
    else:
        click.echo(_job_line(job))


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option(
    "--after", type=int, default=None, help="Show jobs older than this id (the previous page's next)."
)
@url_option
@click.option("--json", "as_json", is_flag=True)
def jobs_list(status: str | None, limit: int, after: int | None, url: str | None, as_json: bool) -> None:
    """Jobs, newest first."""
    from atlas.db.jobs import list_jobs

    with _errors():
        items, cursor = list_jobs(_engine(url), status, after, limit)
    if as_json:
        _echo_json({"items": items, "next": cursor})
        return
    for job in items:
        click.echo(_job_line(job))
    if cursor is not None:
        click.echo(f"more: --after {cursor}")


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
@url_option
def jobs_cancel(job_id: int, url: str | None) -> None:
    """Cancel a queued job, or a running one whose worker stopped (no heartbeat for ATLAS_JOB_STALE_SECONDS);
    a job running live cannot be cancelled."""
    from atlas.config import get_settings
    from atlas.db.jobs import cancel_job

    with _errors():
        cancel_job(_engine(url), job_id, get_settings().job_stale_seconds)
    click.echo(f"job {job_id} cancelled")


GROUPS = (db_group, corpus_group, circuits_group, query_group, jobs_group)


def register(main: click.Group) -> None:
    """Attach the catalogue's command groups to the `atlas` group."""
    for group in GROUPS:
        main.add_command(group)
