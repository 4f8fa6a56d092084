"""Time to first render of the circuit page, and the bytes it takes, for SmolLM2-sized circuits.

    .venv/bin/python benchmarks/bench_pages.py [--edges 100 500 1000 2464] [--circuits 3] [--runs 5]

A SQLite catalogue in a temporary folder holds synthetic circuits of the SmolLM2-135M shape (30 layers x 9
heads; tests/api/api_helpers.py's generator: seeded scores, the top-n-then-prune cut, every row as
atlas.db.store writes it). Each circuit is cut to the number of edges asked for (after pruning, as the page
draws it; seeded random scores prune hard, so the top-n is searched for): the defaults span the sizes the
faithfulness rule gives SmolLM2 circuits, from about 100 edges to 2,464, the search's cap (2% of the
graph's edges). `--circuits` circuits of each size (other seeds), so that the cold load has that many
samples. `atlas serve` (1 uvicorn process) serves them; Debian's chromium (headless, under playwright) opens
/ui/circuits/{id} in a fresh browser context each run (no HTTP cache) and reads:

  render   navigation start -> the graph drawn (the page's performance mark `circuit-drawn`, set after the
           SVG is in the document), ms
  dcl      navigation start -> DOMContentLoaded, ms
  bytes    every response of the page: the HTML shell, the CSS and JS modules, the API calls (the circuit's
           JSON), headers and bodies as sent (playwright's request sizes); no compression is configured

The first load of each circuit meets a cold server cache (the circuit's JSON is built from the database); the
next `--runs` - 1 are answered from the API's response cache. Prints a Markdown table per size: cold (one
sample per circuit) and warm (every later load of every circuit of that size), each as the median and the
range (min-max), with the 1-minute load average at the start and end; a screenshot of one circuit's page per
size goes to test-output/screenshots/bench-circuit-{N}-edges.png.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "api")]  # api_helpers imports services

from api_helpers import _scores, store_synthetic  # noqa: E402

from atlas.db.engine import make_engine, upgrade  # noqa: E402
from atlas.db.store import ModelInfo, import_relations  # noqa: E402
from atlas.spec.corpus import bundled_corpus_path, load_corpus  # noqa: E402
from atlas.spec.graph import GraphIndex, top_n_edges  # noqa: E402
from atlas.spec.params import DiscoveryParams, max_edges_for  # noqa: E402

SMOLLM2 = ModelInfo("smollm2-135m", "LlamaForCausalLM", 30, 9, 576, "float32", "5" * 64)
GRAPH = GraphIndex(SMOLLM2.n_layers, SMOLLM2.n_heads)
CAP = max_edges_for(GRAPH.n_edges, None)  # 2,464: the faithfulness search's default cap on SmolLM2
RELATIONS = ("country_capital_city", "country_language", "name_gender", "adjective_antonym")
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = os.environ.get("ATLAS_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def top_n_for(seed: int, kept: int, ranking: str) -> int:
    """The smallest n whose top-n cut of store_synthetic's scores for `seed` keeps at least `kept` edges
    after pruning."""
    scores = _scores(GRAPH, np.random.default_rng(seed))
    low, high = kept, GRAPH.n_edges
    while low < high:
        mid = (low + high) // 2
        if int(top_n_edges(GRAPH, scores, mid, ranking).sum()) >= kept:
            high = mid
        else:
            low = mid + 1
    return low


def build(url: str, sizes: list[int], copies: int) -> list[tuple[int, list[int]]]:
    """The catalogue: (edges asked for, circuit ids) per size."""
    upgrade(url)
    engine = make_engine(url)
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    circuits = []
    for i, size in enumerate(sizes):
        ids = []
        for copy in range(copies):
            seed = 7 + 100 * i + copy
            base = DiscoveryParams(method="eap-ig", ig_steps=5, max_facts=32, curve=False, seed=copy)
            params = replace(base, top_n=top_n_for(seed, size, base.ranking))
            relation = RELATIONS[(i + copy) % len(RELATIONS)]
            ids.append(store_synthetic(engine, SMOLLM2, relation, params, seed))
        circuits.append((size, ids))
    engine.dispose()
    return circuits


def measure(browser: Any, url: str, screenshot: Path | None = None) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    responses: list[Any] = []
    errors: list[str] = []
    page.on("response", lambda r: responses.append(r))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector('main[data-ready="1"]', timeout=60_000)
    render = page.evaluate("(performance.getEntriesByName('circuit-drawn')[0] || {}).startTime ?? -1")
    dcl = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    edges = page.locator("#graph path.edge").count()
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot, full_page=True)
    sent = 0
    for response in responses:
        sizes = response.request.sizes()
        sent += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    context.close()
    if errors:
        raise RuntimeError(f"console errors on {url}: {errors}")
    return {"render": render, "dcl": dcl, "bytes": sent, "requests": len(responses), "edges": edges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, nargs="+", default=[100, 500, 1000, CAP], help="edges drawn")
    parser.add_argument("--circuits", type=int, default=3, help="circuits per size (cold samples)")
    parser.add_argument("--runs", type=int, default=5, help="loads per circuit: 1 cold, the rest warm")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'atlas.db'}"
        started = time.perf_counter()
        load_start = os.getloadavg()[0]
        circuits = build(url, args.edges, args.circuits)
        print(f"catalogue built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        port = free_port()
        env = {**os.environ, "ATLAS_DATABASE_URL": url, "ATLAS_API_TOKEN": ""}
        server = subprocess.Popen(
            [sys.executable, "-m", "atlas", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            rows = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
                )
                measure(browser, f"{base}/ui")  # the browser's own start-up, not counted
                for size, ids in circuits:
                    runs = [
                        [measure(browser, f"{base}/ui/circuits/{i}") for _ in range(args.runs)] for i in ids
                    ]
                    screenshot = SCREENSHOTS / f"bench-circuit-{size}-edges.png"
                    measure(browser, f"{base}/ui/circuits/{ids[0]}", screenshot)
                    rows.append((size, runs))
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
    print(
        f"Circuit page, SmolLM2 shape (30x9), {args.circuits} circuits per size x {args.runs} loads; "
        f"median (min-max); {os.cpu_count()} CPUs, 1-min load average {load_start:.1f} -> "
        f"{os.getloadavg()[0]:.1f}"
    )
    print("| edges drawn | loads | first render ms | DOMContentLoaded ms | bytes | requests |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, runs in rows:
        drawn = sorted({r["edges"] for circuit in runs for r in circuit})
        name = f"{drawn[0]:,}" if len(drawn) == 1 else f"{drawn[0]:,}-{drawn[-1]:,}"
        cold = [circuit[0] for circuit in runs]
        warm = [r for circuit in runs for r in circuit[1:]]
        for label, sample in ((f"cold ({len(cold)})", cold), (f"warm ({len(warm)})", warm)):
            if not sample:
                continue
            sent = statistics.median(r["bytes"] for r in sample)
            print(
                f"| {name} (asked {size:,}) | {label} | {spread([r['render'] for r in sample])} "
                f"| {spread([r['dcl'] for r in sample])} | {sent:,.0f} "
                f"| {statistics.median(r['requests'] for r in sample):.0f} |"
            )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


if __name__ == "__main__":
    main()
