"""Head roles, logit-lens surfacing, hallucinations and in-context learning for several relations.

Per relation: the facts the model gets right (top-1) and wrong (checked in seeded order, --max-checked);
the circuit of the correct facts (EAP edges, top --top-n) with each head's role (mover / relation / mix /
other, from attention at the last position over the checked facts' prompts) and where the object surfaces
under the logit lens; the circuit of the wrong answers against it; and the paper's Table 2 check with
--k demonstrations. Prints four tables; --json writes every result. Example::

    python benchmarks/bench_roles.py --max-facts 8 --json /tmp/roles.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

LRE_DIR = Path(__file__).resolve().parents[2] / "shared" / "lre"
DEFAULT_RELATIONS = (
    "country_capital_city,country_language,company_hq,adj_antonym,fruit_inside_color,occupation_gender"
)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def main() -> None:
    from atlas.core.component_lens import relation_lens
    from atlas.core.hallucination import HallucinationParams, analyze_hallucinations
    from atlas.core.icl import ICLParams, icl_analysis
    from atlas.core.models import load_model
    from atlas.core.roles import RoleThresholds, relation_head_roles
    from atlas.spec.corpus import Fact, bundled_corpus_path, load_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="", help="cpu or cuda (default: the atlas setting)")
    parser.add_argument(
        "--corpus", default="", help=f"relation folder (default {LRE_DIR} if present, else bundled)"
    )
    parser.add_argument("--relations", default=DEFAULT_RELATIONS)
    parser.add_argument("--method", default="eap", choices=("eap", "eap-ig"))
    parser.add_argument("--top-n", type=int, default=300, help="edges in the correct and wrong circuits")
    parser.add_argument("--top-n-nodes", type=int, default=30, help="heads and MLPs in the ICL circuits")
    parser.add_argument("--max-facts", type=int, default=8, help="facts per circuit")
    parser.add_argument("--max-checked", type=int, default=48, help="facts checked for correct / wrong")
    parser.add_argument("--k", type=int, default=3, help="ICL demonstrations")
    parser.add_argument("--n-random", type=int, default=3, help="random head sets in the ICL baseline")
    parser.add_argument("--mover", type=float, default=RoleThresholds.mover)
    parser.add_argument("--relation-threshold", type=float, default=RoleThresholds.relation)
    parser.add_argument("--json", default="", help="write every result here")
    args = parser.parse_args()

    corpus = load_corpus(
        Path(args.corpus) if args.corpus else (LRE_DIR if LRE_DIR.is_dir() else bundled_corpus_path())
    )
    start = time.perf_counter()
    model = load_model(args.model, device=args.device)
    thresholds = RoleThresholds(args.mover, args.relation_threshold)
    results: dict[str, dict[str, Any]] = {}
    for name in args.relations.split(","):
        relation = corpus[name]
        clock = time.perf_counter()
        hallucination = analyze_hallucinations(
            model,
            relation,
            HallucinationParams(
                method=args.method, top_n=args.top_n, max_facts=args.max_facts, max_checked=args.max_checked
            ),
        )
        checked = [Fact(o.subject, o.object) for o in hallucination.outcomes]
        correct = [Fact(o.subject, o.object) for o in hallucination.correct][: args.max_facts]
        roles = relation_head_roles(
            model, relation, hallucination.correct_nodes, checked, thresholds=thresholds
        )
        lens = relation_lens(model, relation, hallucination.correct_nodes, correct) if correct else None
        icl = icl_analysis(
            model,
            relation,
            ICLParams(
                k=args.k,
                method=args.method,
                top_n=args.top_n_nodes,
                max_facts=args.max_facts,
                n_random=args.n_random,
            ),
        )
        results[name] = {
            "hallucination": hallucination.to_dict(),
            "roles": roles.to_dict(),
            "lens": None if lens is None else lens.to_dict(),
            "icl": icl.to_dict(),
            "seconds": time.perf_counter() - clock,
        }
        print(f"{name}: {results[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
        if args.json:  # after each relation, so a long run leaves what it has
            Path(args.json).write_text(json.dumps(results, indent=1))

    print(
        f"model {args.model}, method {args.method}, top-n {args.top_n} edges "
        f"(ICL: {args.top_n_nodes} nodes), max-facts {args.max_facts}, max-checked {args.max_checked}, "
        f"k {args.k}, thresholds mover "
        f"{thresholds.mover} / relation {thresholds.relation}; {time.perf_counter() - start:.0f} s in all\n"
    )
    rows = []
    for name, r in results.items():
        h, counts, lens = r["hallucination"], r["roles"]["counts"], r["lens"]
        surfaces = "-" if lens is None else (lens["first_top1"] or f"none (best {lens['best']})")
        layer = "-" if lens is None or lens["first_top1_layer"] is None else str(lens["first_top1_layer"])
        rows.append(
            [
                name,
                f"{h['n_correct']}/{h['n_wrong']}",
                str(len(r["roles"]["heads"])),
                *(str(counts[role]) for role in ("mover", "relation", "mix", "other")),
                surfaces,
                layer,
                f"{r['seconds']:.0f}",
            ]
        )
    header = ["relation", "correct/wrong", "heads", "mover", "relation", "mix", "other"]
    print("Head roles in the circuit of the correct facts; where the object first reaches rank 1")
    print(table([*header, "first rank-1 component", "rank-1 layer (residual)", "s"], rows))

    seen: dict[str, list[str]] = defaultdict(list)
    attention: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in results.values():
        for head in r["roles"]["heads"]:
            seen[head["name"]].append(head["role"])
            attention[head["name"]].append((head["subject_attention"], head["relation_attention"]))
    recurrent = sorted(seen, key=lambda n: (-len(seen[n]), n))[:12]
    rows = []
    for head in recurrent:
        roles_seen = ", ".join(f"{role} {count}" for role, count in Counter(seen[head]).most_common())
        subject = sum(a for a, _ in attention[head]) / len(attention[head])
        related = sum(b for _, b in attention[head]) / len(attention[head])
        rows.append([head, f"{len(seen[head])}/{len(results)}", roles_seen, fmt(subject, 2), fmt(related, 2)])
    print("\nMost recurrent heads (in how many relations' circuits), their roles there and mean attention")
    print(table(["head", "relations", "roles", "subject attn", "relation attn"], rows))

    rows = []
    for name, r in results.items():
        h = r["hallucination"]
        examples = ", ".join(
            f"{o['subject']}: {o['prediction'].strip()!r} not {o['object']!r}"
            for o in h["outcomes"]
            if not o["correct"]
        )
        rows.append(
            [
                name,
                f"{h['n_correct']}/{h['n_wrong']}",
                str(len(h["wrong_circuit"]["nodes"])),
                fmt(h["node_jaccard"], 2),
                fmt(h["edge_jaccard"], 2),
                ", ".join(p["name"] for p in h["pushers"][:4]),
                ", ".join(h["by_lens"][:4]),
                examples[:70] + ("..." if len(examples) > 70 else ""),
            ]
        )
    print("\nHallucinations: the wrong answers' circuit against the correct facts' circuit")
    header = ["relation", "correct/wrong", "wrong nodes", "node J", "edge J", "top push (attribution)"]
    print(table([*header, "top push (lens)", "wrong answers"], rows))

    rows = []
    for name, r in results.items():
        i = r["icl"]
        rows.append(
            [
                name,
                str(i["n_facts"]),
                str(len(i["icl_only_heads"])),
                fmt(i["prob_zero_shot"]),
                fmt(i["prob_original"]),
                fmt(i["prob_icl_ablated"]),
                fmt(i["prob_random_ablated"]),
            ]
        )
    print(f"\nTable 2 (object probability with {args.k} demonstrations; heads mean-ablated)")
    header = ["relation", "facts", "ICL-only heads", "zero-shot", "original", "ICL heads ablated"]
    print(table([*header, "random heads ablated"], rows))


if __name__ == "__main__":
    main()
