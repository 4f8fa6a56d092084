"""Knowledge edits on a real model: ROME and FT-M at a few layers, over facts the model knows.

For each relation fact the model ranks first (seeded order), the edit rewrites its object to the object
of the next such fact, and the outcome is measured (atlas.core.editing.outcomes): efficacy,
generalization to the relation's other templates, locality on 10 same-relation neighbours and 10 facts
of other relations, the old object's fate. Outcomes are the mean and standard deviation over edits.

Time is the wall time of one edit (the method and the copy), given as the median and the range (min-max)
over the edits. ROME's key covariance is estimated once per layer and process (and cached): it is timed on
its own before that layer's edits, so no edit's time includes it. Memory is the peak resident set size
(RSS, sampled from /proc every 20 ms) during an edit above the RSS before it, the largest over the edits
(and, for the covariance, during its estimate). The 1-minute load average is printed at the start and the
end of each method and layer: on a shared machine, times follow it.

    python benchmarks/bench_editing.py                          # 20 edits, rome and ft-m, layers 3 and 10
    python benchmarks/bench_editing.py --edits 4 --layers 3 --methods rome --json /tmp/edits.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

from atlas.core.editing import EditParams, EditRequest, apply_edit, edit_outcome, probes_for, resolved_params
from atlas.core.editing.base import object_ids
from atlas.core.editing.covariance import key_covariance
from atlas.core.editing.scoring import score_items
from atlas.core.models import LoadedModel, load_model
from atlas.spec.corpus import Relation, bundled_corpus_path, load_corpus

LRE = Path(__file__).resolve().parents[2] / "shared" / "lre"


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Peak RSS while the block runs, sampled by a thread."""

    def __enter__(self) -> PeakRss:
        self.before = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def known_requests(model: LoadedModel, relation: Relation, n: int, seed: int) -> list[EditRequest]:
    """Requests for `n` facts the model ranks first, each rewritten to the next one's object."""
    facts = list(relation.facts)
    random.Random(seed).shuffle(facts)
    known = []
    for start in range(0, len(facts), 32):
        chunk = facts[start : start + 32]
        items = [
            (tuple(model.encode(relation.prompt(f.subject))), tuple(object_ids(model, f.object)))
            for f in chunk
        ]
        known += [f for f, score in zip(chunk, score_items(model, items), strict=True) if score.first]
        if len(known) > n:
            break
    requests = []
    for i, fact in enumerate(known[:n]):
        other = next(f for f in known[i + 1 :] + known[:i] if f.object != fact.object)
        requests.append(EditRequest(relation.prompt(fact.subject), fact.subject, other.object, fact.object))
    return requests


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(key: str) -> tuple[float, float]:
        values = [float(r[key]) for r in rows if r[key] == r[key]]  # drop nan
        return statistics.fmean(values), statistics.pstdev(values)

    return {
        key: stats(key)
        for key in (
            "efficacy",
            "efficacy_prob",
            "generalization",
            "generalization_prob",
            "locality",
            "locality_neighbours",
            "locality_others",
            "neighbourhood_score",
            "old_rank_after",
            "old_prob_before",
            "old_prob_after",
            "new_prob_after",
            "seconds",
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default=str(LRE if LRE.is_dir() else bundled_corpus_path()))
    parser.add_argument("--relation", default="country_capital_city")
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--layers", default="3,10", help="comma-separated MLP layers")
    parser.add_argument("--methods", default="rome,ft-m", help="comma-separated methods")
    parser.add_argument("--steps", type=int, default=None, help="override every method's default steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write every edit's record here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    relations = load_corpus(args.corpus)
    relation = relations[args.relation]
    model = load_model(args.model, device="cpu")
    requests = known_requests(model, relation, args.edits, args.seed)
    print(f"{args.model}, {relation.name}: {len(requests)} edits of known facts, corpus {args.corpus}")
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    memory: dict[tuple[str, int], float] = {}
    covariance: dict[tuple[str, int], tuple[float, float]] = {}  # (seconds, MB) of ROME's estimate
    loads: dict[tuple[str, int], tuple[float, float]] = {}
    for method in args.methods.split(","):
        for layer in (int(x) for x in args.layers.split(",")):
            key = (method, layer)
            rows = results.setdefault(key, [])
            load_start = os.getloadavg()[0]
            params = EditParams(method=method, layer=layer, steps=args.steps, seed=args.seed)
            if method == "rome":
                clock = time.perf_counter()
                with PeakRss() as rss:
                    key_covariance(model, layer, resolved_params(params).cov_tokens)
                covariance[key] = (time.perf_counter() - clock, rss.peak - rss.before)
            for request in requests:
                with PeakRss() as rss:
                    result = apply_edit(model, request, params)
                memory[key] = max(memory.get(key, 0.0), rss.peak - rss.before)
                outcome = edit_outcome(model, result.model, request, probes_for(relation, request, relations))
                record = outcome.to_dict()
                rows.append(
                    {
                        **record,
                        "request": request.to_dict(),
                        "old_rank_after": outcome.old.rank_after,
                        "old_prob_before": outcome.old.prob_before,
                        "old_prob_after": outcome.old.prob_after,
                        "new_prob_after": outcome.new.prob_after,
                        "seconds": result.seconds,
                        "steps_run": result.steps_run,
                    }
                )
                print(
                    f"  {method:5} L{layer:<2} {request.subject} -> {request.target_new}: "
                    f"efficacy {outcome.efficacy:d}, gen {record['generalization']}, "
                    f"loc {outcome.locality:.2f}, {result.seconds:.1f} s",
                    flush=True,
                )
            loads[key] = (load_start, os.getloadavg()[0])
    print(
        f"\n{args.model}, {relation.name}, {len(requests)} edits per row; outcomes: mean ± sd over edits; "
        f"s/edit: median (min-max); {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'method':6} {'layer':>5} {'edits':>5} {'efficacy':>13} {'P(new)>P(old)':>13} {'generaliz.':>13} "
        f"{'gen. P>':>13} {'locality':>13} {'neighb. NS':>13} {'old rank':>9} {'P(old) b->a':>13} "
        f"{'s/edit (min-max)':>20} {'MB':>6} {'covariance s, MB':>17} {'load start->end':>16}"
    )
    print(header)
    for (method, layer), rows in results.items():
        s = summarize(rows)
        seconds = [float(r["seconds"]) for r in rows]

        def cell(key: str, s: dict[str, Any] = s) -> str:
            return f"{s[key][0]:.2f} ± {s[key][1]:.2f}"

        timing = f"{statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f})"
        cov = covariance.get((method, layer))
        cov_cell = "-" if cov is None else f"{cov[0]:.1f} s, {cov[1]:.0f}"
        load = loads[(method, layer)]
        print(
            f"{method:6} {layer:>5} {len(rows):>5} {cell('efficacy'):>13} {cell('efficacy_prob'):>13} "
            f"{cell('generalization'):>13} {cell('generalization_prob'):>13} {cell('locality'):>13} "
            f"{cell('neighbourhood_score'):>13} {s['old_rank_after'][0]:>9.1f} "
            f"{s['old_prob_before'][0]:.2f}->{s['old_prob_after'][0]:.2f}{'':>3} "
            f"{timing:>20} {memory[(method, layer)]:>6.0f} {cov_cell:>17} "
            f"{f'{load[0]:.1f}->{load[1]:.1f}':>16}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {f"{m}@{layer}": rows for (m, layer), rows in results.items()}, indent=1, allow_nan=False
            )
        )


if __name__ == "__main__":
    main()
