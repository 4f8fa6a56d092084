"""Peak memory of discovery against batch size and model shape, with and without a memory budget.

Each row runs in a fresh subprocess, and its peak is that process's own `ru_maxrss` (`os.wait4`), load
included. Attribution rows (`atlas.core.attribution.fact_scores`, EAP-IG, `--steps` m, one batch of
`batch` facts from the bundled corpus) also give "peak RSS (phase)": VmHWM after resetting it
(`/proc/self/clear_refs`) once the model is loaded, so it covers attribution alone (with the weights and
what loading left in the allocator). The `discover` row runs `atlas discover` end to end (filtering,
attribution, evaluation, roles) with `--max-memory`, `--max-facts` facts and as many held out (batches of
both, so filtering runs the model on no more pairs than it keeps). A row whose estimated peak
(atlas.core.memory: the weights and runtime plus the per-fact estimate times the batch) is over `--cap` is
not run, so no measurement can take the machine's memory; its estimate is printed instead. The 1-minute
load average is printed after each row. Example::

    python benchmarks/bench_memory.py                 # the default rows (about 15 minutes on 2 cores)
    python benchmarks/bench_memory.py --rows smollm2-135m:16:1.5GB --cap 8GB
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# model:batch:budget ("-": none), or discover:model:facts:budget
DEFAULT_ROWS = (
    "smollm2-135m:4:-",
    "smollm2-135m:16:-",
    "smollm2-135m:16:1.5GB",
    "random-gpt2-medium:4:-",
    "random-gpt2-medium:16:-",
    "random-gpt2-medium:16:6GB",
    "discover:random-tinyllama:2:11GB",
)
RELATION = "country_capital_city"


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else -1


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One attribution row, in this (fresh) process."""
    import torch

    from atlas.core.attribution import fact_scores, graph_of
    from atlas.core.memory import attribution_fact_bytes, discovery_budget, facts_per_pass
    from atlas.core.metrics import object_logprob
    from atlas.core.models import load_model
    from atlas.core.pairs import make_batches, make_pairs, tokenize_facts
    from atlas.spec.corpus import bundled_corpus_path, load_corpus
    from atlas.spec.memory import parse_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter()
    model = load_model(args.model, device="cpu")
    load_seconds = time.perf_counter() - clock
    relation = load_corpus(bundled_corpus_path())[RELATION]
    tokenized = tokenize_facts(relation, relation.facts, model.encode, model.encode_continuation, None)
    pairs = make_pairs(tokenized, tokenized).pairs[: args.batch]
    (batch,) = make_batches(pairs, args.batch, 0)
    budget = discovery_budget(model, parse_memory(args.budget) if args.budget != "-" else None)
    graph = graph_of(model)
    need = attribution_fact_bytes(
        model, graph, batch.clean.shape[1], batch.target_pos.shape[1], "edge", "eap-ig"
    )
    out: dict[str, Any] = {
        "load_seconds": load_seconds,
        "batch_shape": list(batch.clean.shape),
        "rss_after_load_kb": _status_kb("VmRSS"),
        "fact_estimate_bytes": need,
        "facts_per_pass": batch.size
        if budget is None
        else min(batch.size, facts_per_pass(budget, need, "x")),
    }
    Path("/proc/self/clear_refs").write_text("5")
    clock = time.perf_counter()
    fact_scores(model, [batch], object_logprob, method="eap-ig", steps=args.steps, budget=budget)
    out["seconds"] = time.perf_counter() - clock
    out["peak_phase_kb"] = _status_kb("VmHWM")
    return out


def estimate_bytes(model: str, batch: int, budget: str) -> int:
    """Weights + runtime + batch x the per-fact estimate on a 50-token prompt, for the --cap check. With a
    budget, the budget itself."""
    from atlas.core.memory import RUNTIME_BYTES, attribution_fact_bytes
    from atlas.core.tiny import RANDOM_MODELS
    from atlas.spec.memory import parse_memory

    if budget != "-":
        return parse_memory(budget)
    if model not in RANDOM_MODELS:
        return 0  # real models here are small; measured, not estimated
    import types

    from atlas.core.graph import Graph

    _, config = RANDOM_MODELS[model]
    layers = config.get("n_layer", config.get("num_hidden_layers"))
    heads = config.get("n_head", config.get("num_attention_heads"))
    d = config.get("n_embd", config.get("hidden_size"))
    d_mlp = config.get("intermediate_size", 4 * d)
    norm = "LN" if "n_layer" in config else "RMS"
    cfg = types.SimpleNamespace(normalization_type=norm, d_mlp=d_mlp, d_vocab=config.get("vocab_size", 50257))
    shape: Any = types.SimpleNamespace(
        bridge=types.SimpleNamespace(cfg=cfg), d_model=d, n_heads=heads, n_layers=layers
    )
    weights = 4 * (layers * (4 * d * d + 3 * d * d_mlp) + 2 * cfg.d_vocab * d)
    return (
        weights
        + RUNTIME_BYTES
        + batch * attribution_fact_bytes(shape, Graph(layers, heads), 50, 8, "edge", "eap-ig")
    )


def _run(command: list[str]) -> tuple[int, int, str]:
    """Exit status, peak RSS (KiB) of the child alone, and its output."""
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return child.returncode, usage.ru_maxrss, log.read()


def run_row(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    parts = spec.split(":")
    discover = parts[0] == "discover"
    model, n, budget = parts[1:] if discover else parts
    row: dict[str, Any] = {
        "row": spec,
        "model": model,
        "batch": int(n),
        "budget": budget,
        "discover": discover,
    }
    estimate = estimate_bytes(model, int(n), budget)
    if estimate > args.cap_bytes:
        row["skipped"] = f"estimated {estimate / 2**30:.1f} GiB > cap"
        return row
    with tempfile.TemporaryDirectory(prefix="atlas-mem-") as tmp:
        if discover:
            command = [
                sys.executable, "-m", "atlas", "discover", "--model", model, "--relation", RELATION,
                "--keep-unknown", "--max-facts", n, "--batch-size", str(2 * int(n)), "--ig-steps",
                str(args.steps), "--top-n", "50",
                "--no-curve", "--bootstrap", "0", "--no-store", "--json", "--max-memory", budget,
            ]  # fmt: skip
        else:
            result = Path(tmp) / "row.json"
            command = [
                sys.executable, str(Path(__file__).resolve()), "--worker", str(result), "--model", model,
                "--batch", n, "--budget", budget, "--steps", str(args.steps), "--threads", str(args.threads),
            ]  # fmt: skip
        clock = time.perf_counter()
        status, peak_kb, output = _run(command)
        row.update(status=status, process_peak_kb=peak_kb, wall_seconds=time.perf_counter() - clock)
        if status != 0:
            row["error"] = output.strip().splitlines()[-1] if output.strip() else "?"
        elif discover:
            summary = json.loads(output.strip().splitlines()[-1])
            row["seconds"] = summary["seconds"]
            row["n_facts"] = summary["n_facts"]
        else:
            row.update(json.loads(result.read_text()))
    row["load_after"] = os.getloadavg()[0]
    return row


def _gib(kb: float) -> str:
    return f"{kb / 2**20:.2f} GiB"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| model | batch | budget | facts per pass | peak RSS (phase) | process peak | seconds | load after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        what = f"`atlas discover` ({row['batch']} facts)" if row["discover"] else row["model"]
        model = f"{row['model']}: {what}" if row["discover"] else what
        if "skipped" in row:
            print(f"| {model} | {row['batch']} | {row['budget']} | | not run: {row['skipped']} | | | |")
            continue
        if row.get("status"):
            print(f"| {model} | {row['batch']} | {row['budget']} | | failed: {row.get('error')} | | | |")
            continue
        phase = _gib(row["peak_phase_kb"]) if "peak_phase_kb" in row else "-"
        per_pass = row.get("facts_per_pass", "-")
        seconds = row.get("seconds")
        shown = (
            f"{seconds:.1f}"
            if isinstance(seconds, float)
            else f"{row['wall_seconds']:.0f} wall ({', '.join(f'{k} {v:.0f}' for k, v in seconds.items())})"
        )
        print(
            f"| {model} | {row['batch']} | {row['budget']} | {per_pass} | {phase} | "
            f"{_gib(row['process_peak_kb'])} | {shown} | {row['load_after']:.2f} |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", default=",".join(DEFAULT_ROWS), help="model:batch:budget,... (see the source)"
    )
    parser.add_argument("--steps", type=int, default=2, help="EAP-IG steps m")
    parser.add_argument("--cap", default="11GB", help="rows estimated above this are not run")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default="", help="write the rows here")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--budget", default="-", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        Path(args.worker).write_text(json.dumps(run_worker(args)))
        return
    from atlas.spec.memory import parse_memory

    args.cap_bytes = parse_memory(args.cap)
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)", flush=True)
    rows = []
    for spec in args.rows.split(","):
        print(f"[bench] {spec} ...", file=sys.stderr, flush=True)
        rows.append(run_row(spec, args))
        print(f"[bench] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
