"""EAP-IG against EAP-IG refined by a learned edge mask (`eap-ig-mask`, Edge Pruning's objective started from
the EAP-IG ranking): the size the search chooses, whether it meets the target, faithfulness on the discovery
and held-out facts, and the seconds each spends.

For each relation, `atlas.core.discover.discover` runs once per method with the same parameters
(`--max-facts` discovery facts, as many held out, `--ig-steps`, no curve, `--bootstrap` resamples); the mask
method's steps are `--mask-steps` (its module's MASK_STEPS by default). "attribution s" is the scoring
phase: for `eap-ig-mask` EAP-IG and the mask's optimization together; "search s" the size search and
evaluation. The machine's load (`uptime`) is printed before and after: timings on a shared machine are
noisy. Examples::

    python benchmarks/bench_edge_mask.py                                   # country_language, SmolLM2
    python benchmarks/bench_edge_mask.py --relations country_language verb_past_tense --mask-steps 30
    python benchmarks/bench_edge_mask.py --model tiny-llama --max-facts 4 --mask-steps 5 --known-any
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

import torch

from atlas.core.attribution import edge_mask, scorer
from atlas.core.discover import DiscoveryParams, discover
from atlas.core.models import load_model
from atlas.spec.corpus import bundled_corpus_path, load_corpus


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average {os.getloadavg()}"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    if args.mask_steps is not None:
        edge_mask.MASK_STEPS = args.mask_steps
    if args.penalty:
        edge_mask.MASK_TARGET = None
    model = load_model(args.model, device="cpu")
    relations = load_corpus(bundled_corpus_path())
    rows = []
    for name in args.relations:
        for method in args.methods:
            params = DiscoveryParams(
                method=method,
                ig_steps=args.ig_steps,
                max_facts=args.max_facts,
                curve=False,
                bootstrap=args.bootstrap,
                known_only=not args.known_any,
                seed=args.seed,
            )
            clock = time.perf_counter()
            result = discover(model, relations[name], params)
            total = time.perf_counter() - clock
            size = result.size
            assert size is not None
            implementation = scorer(method)
            losses = list(getattr(implementation, "losses", []))
            rows.append(
                {
                    "relation": name,
                    "method": method,
                    "facts": f"{result.counts.discovery}+{result.counts.heldout}",
                    "cap": size.cap,
                    "size": size.size,
                    "target_met": size.target_met,
                    "faith_discovery": result.discovery.faithfulness,
                    "faith_heldout": None if result.heldout is None else result.heldout.faithfulness,
                    "attribution_s": result.seconds["attribution"],
                    "search_s": result.seconds["evaluation"],
                    "total_s": total,
                    "mask_loss_first_last": [losses[0], losses[-1]] if losses else None,
                    "trace": size.trace,
                    "load_after": os.getloadavg()[0],
                }
            )
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "trace"}), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'relation':18} {'method':12} {'facts':6} {'cap':>5} {'size':>5} {'met':>5} {'faith d':>8} "
        f"{'faith h':>8} {'attr s':>7} {'search s':>8} {'load':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        held = "-" if r["faith_heldout"] is None else f"{r['faith_heldout']:.3f}"
        lines.append(
            f"{r['relation']:18} {r['method']:12} {r['facts']:6} {r['cap']:>5} {r['size']:>5} "
            f"{r['target_met']!s:>5} {r['faith_discovery']:>8.3f} {held:>8} {r['attribution_s']:>7.0f} "
            f"{r['search_s']:>8.0f} {r['load_after']:>5.1f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--relations", nargs="+", default=["country_language"])
    parser.add_argument("--methods", nargs="+", default=["eap-ig", "eap-ig-mask"])
    parser.add_argument("--max-facts", type=int, default=8)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--mask-steps", type=int, default=None, help="default: edge_mask.MASK_STEPS")
    parser.add_argument(
        "--penalty", action="store_true", help="the mask's fixed sparsity penalty, not held to the target"
    )
    parser.add_argument("--bootstrap", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--known-any", action="store_true", help="keep facts the model does not know")
    parser.add_argument("--json", default=None, help="write the rows (with each search's trace) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"start: {uptime()}", flush=True)
    print(
        f"mask: steps {args.mask_steps or edge_mask.MASK_STEPS}, lr {edge_mask.MASK_LR}, "
        f"lambda {edge_mask.MASK_LAMBDA}, "
        f"target {None if args.penalty else edge_mask.MASK_TARGET}, pool {edge_mask.POOL_FACTOR} x cap",
        flush=True,
    )
    rows = run(args)
    print(table(rows))
    print(f"end: {uptime()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
