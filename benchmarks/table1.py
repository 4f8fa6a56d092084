"""The paper's Table 1 for several LRE relations on one model: one `discover(...)` per relation.

Columns: relation, category, facts known/checked/total (object in the model's top 10, of the facts checked
in seeded order until discovery and held-out sets are full, of all facts), discovery
facts (known and paired, capped at --max-facts), circuit edges and nodes, Hit@10 of the original model /
the circuit / a random circuit of the same size on the discovery facts, faithfulness
(m(circuit) - m(empty)) / (m(full) - m(empty)) of the summed object log-prob, Hit@10 of the circuit on
the held-out facts, and wall seconds (attribution seconds in brackets). A relation that cannot be
discovered (DiscoveryError) gets a row saying why. Example::

    python benchmarks/table1.py --max-facts 16 --json /tmp/table1.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

LRE_DIR = Path(__file__).resolve().parents[2] / "shared" / "lre"
DEFAULT_RELATIONS = (
    "country_capital_city,country_language,company_hq,landmark_in_country,"
    "adj_antonym,fruit_inside_color,occupation_gender"
)


def main() -> None:
    from atlas.core.circuit import DEFAULT_TOP_N
    from atlas.core.corpus import bundled_corpus_path, load_corpus
    from atlas.core.discover import DiscoveryError, DiscoveryParams, discover
    from atlas.core.models import load_model
    from atlas.core.pairs import PairingError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="", help="cpu or cuda (default: the atlas setting)")
    parser.add_argument(
        "--corpus", default="", help=f"relation folder (default {LRE_DIR} if present, else bundled)"
    )
    parser.add_argument("--relations", default=DEFAULT_RELATIONS)
    parser.add_argument("--method", default="eap-ig", choices=("eap", "eap-ig"))
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    parser.add_argument("--max-facts", type=int, default=32)
    parser.add_argument("--curve", action="store_true", help="also compute the faithfulness curve (slower)")
    parser.add_argument("--json", default="", help="write every relation's summary() here")
    args = parser.parse_args()

    corpus_path = (
        Path(args.corpus) if args.corpus else (LRE_DIR if LRE_DIR.is_dir() else bundled_corpus_path())
    )
    corpus = load_corpus(corpus_path)
    clock = time.perf_counter()
    model = load_model(args.model, device=args.device)
    load_seconds = time.perf_counter() - clock
    params = DiscoveryParams(
        method=args.method,
        ig_steps=args.ig_steps,
        max_facts=args.max_facts,
        top_n=args.top_n,
        curve=args.curve,
    )
    header = [
        "relation",
        "category",
        "known/checked/total",
        "disc. facts",
        "edges",
        "nodes",
        "Hit@10 orig / circuit / random",
        "faithfulness",
        "held-out Hit@10 circuit",
        "seconds (attribution)",
    ]
    rows: list[list[str]] = []
    summaries: list[dict[str, Any]] = []
    for name in args.relations.split(","):
        relation = corpus.get(name)
        if relation is None:
            rows.append([name, "-", f"not in {corpus_path}", *["-"] * (len(header) - 3)])
            continue
        clock = time.perf_counter()
        try:
            result = discover(model, relation, params)
        except (DiscoveryError, PairingError) as error:
            rows.append(
                [name, relation.category, f"{type(error).__name__}: {error}", *["-"] * (len(header) - 3)]
            )
            continue
        seconds = time.perf_counter() - clock
        summary = result.summary()
        summary["wall_seconds"] = seconds
        summaries.append(summary)
        c, d, h = result.counts, result.discovery, result.heldout
        rows.append(
            [
                name,
                relation.category,
                f"{c.known}/{c.checked}/{c.total}",
                str(c.discovery),
                str(result.circuit.n_edges),
                str(result.circuit.n_nodes),
                f"{d.hit_original:.2f} / {d.hit_circuit:.2f} / {d.hit_random:.2f}",
                f"{d.faithfulness:.2f}",
                "-" if h is None else f"{h.hit_circuit:.2f} (n={h.n_facts})",
                f"{seconds:.1f} ({result.seconds.get('attribution', 0.0):.1f})",
            ]
        )
        print(f"[table1] {name}: {seconds:.1f} s", flush=True, file=sys.stderr)

    print(
        f"model {args.model} on {model.device} (load {load_seconds:.1f} s), corpus {corpus_path}, "
        f"method {args.method}"
        + (f" m={args.ig_steps}" if args.method == "eap-ig" else "")
        + f", top-n {args.top_n}, max-facts {args.max_facts}\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2, default=str))


if __name__ == "__main__":
    main()
