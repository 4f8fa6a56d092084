"""Time to first render of the circuit page, and the bytes it takes, for SmolLM2-sized circuits.

    .venv/bin/python benchmarks/bench_pages.py [--runs 5] [--edges 300 3000]

A SQLite catalogue in a temporary folder holds synthetic circuits of the SmolLM2-135M shape (30 layers x 9
heads; tests/api/api_helpers.py's generator: seeded scores, the top-n-then-prune cut, every row as
atlas.db.store writes it), one per size in --edges (300: the default top-300 circuit; 3,000: as large as a
threshold cut gets). `atlas serve` (1 uvicorn process) serves it; Debian's chromium (headless, under
playwright) opens /ui/circuits/{id} in a fresh browser context each run (no HTTP cache) and reads:

  render   navigation start -> the graph drawn (the page's performance mark `circuit-drawn`, set after the
           SVG is in the document), ms
  dcl      navigation start -> DOMContentLoaded, ms
  bytes    every response of the page: the HTML shell, the CSS and JS modules, the API calls (the circuit's
           JSON), headers and bodies as sent (playwright's request sizes); no compression is configured

The first run of each circuit meets a cold server cache (the circuit's JSON is built from the database); the
rest are answered from the API's response cache. Prints a Markdown table: cold, then the median of the rest;
a screenshot of each circuit's page goes to test-output/screenshots/bench-circuit-top{N}.png.
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
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "api"))

from api_helpers import store_synthetic  # noqa: E402

from atlas.core.corpus import bundled_corpus_path, load_corpus  # noqa: E402
from atlas.db.engine import make_engine, upgrade  # noqa: E402
from atlas.db.store import ModelInfo, import_relations  # noqa: E402
from atlas.spec.params import DiscoveryParams  # noqa: E402

SMOLLM2 = ModelInfo("smollm2-135m", "LlamaForCausalLM", 30, 9, 576, "float32", "5" * 64)
RELATIONS = ("country_capital_city", "country_language", "name_gender", "adjective_antonym")
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = os.environ.get("ATLAS_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(url: str, sizes: list[int]) -> list[tuple[int, int]]:
    """The catalogue: (size asked, circuit id) per size."""
    upgrade(url)
    engine = make_engine(url)
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    circuits = []
    for i, size in enumerate(sizes):
        params = DiscoveryParams(method="eap-ig", ig_steps=5, top_n=size, max_facts=32, curve=False)
        relation = RELATIONS[i % len(RELATIONS)]
        circuits.append((size, store_synthetic(engine, SMOLLM2, relation, params, 7 + i)))
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
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--edges", type=int, nargs="+", default=[300, 3000])
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'atlas.db'}"
        started = time.perf_counter()
        circuits = build(url, args.edges)
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
                for size, circuit_id in circuits:
                    page = f"{base}/ui/circuits/{circuit_id}"
                    runs = [measure(browser, page) for _ in range(args.runs)]
                    measure(browser, page, SCREENSHOTS / f"bench-circuit-top{size}.png")
                    rows.append((size, circuit_id, runs))
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
    print("| circuit (SmolLM2 shape 30x9) | run | first render ms | DOMContentLoaded ms | bytes | requests |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, circuit_id, runs in rows:
        name = f"#{circuit_id}: top-{size}, {runs[0]['edges']:,} edges drawn"
        cold, warm = runs[0], runs[1:] or runs
        median = {key: statistics.median(r[key] for r in warm) for key in cold}
        for label, r in (("cold", cold), (f"warm (median of {len(warm)})", median)):
            print(
                f"| {name} | {label} | {r['render']:,.0f} | {r['dcl']:,.0f} | {r['bytes']:,.0f} "
                f"| {r['requests']:.0f} |"
            )


if __name__ == "__main__":
    main()
