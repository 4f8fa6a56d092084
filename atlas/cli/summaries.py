"""How `atlas discover` and `atlas demo` show discovery results: the summary table, the lines counting facts
(and the held-out numbers, curve and head roles), and the circuit as a file."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from atlas.spec.json_safe import finite

if TYPE_CHECKING:
    from atlas.core.discover import DiscoveryResult


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


def counts_lines(summary: dict[str, Any]) -> str:
    """Lines under the table: the facts counted, the held-out numbers, the curve's area, the heads' roles and
    the seconds each step took."""
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
