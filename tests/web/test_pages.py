"""The web pages in a real headless browser (Debian's chromium under playwright) against `atlas serve`: each
page loads without console errors, the circuit graph has the circuit's nodes and edges, a catalogue filter
narrows the list, the size slider re-cuts the circuit to what /recut returns, the recurrence heatmap has
n_layers x n_heads cells, the comparison highlights exactly the shared edges, the edit page draws the edges
lost and gained, and the job form without a token shows the API's 401 message. A screenshot of each page
goes to test-output/screenshots/."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_helpers import PLANTED_HEAD, PLANTED_MODEL, Console, Site

from atlas.spec.corpus import CATEGORIES

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"


def ready(page: Any) -> None:
    page.wait_for_selector('main[data-ready="1"]')


def test_catalogue_filters_sorts_and_pages(site: Site, page: Any, screenshots: Path) -> None:
    everything = site.get("/circuits", limit=500)["items"]
    toy_b = site.get("/circuits", model="toy-b", limit=500)["items"]
    assert 0 < len(toy_b) < len(everything)
    page.goto(f"{site.base}/ui")
    ready(page)
    rows = page.locator("tr.circuit-row")
    assert rows.count() == len(everything)
    page.screenshot(path=screenshots / "catalogue.png", full_page=True)

    page.select_option("#f-model", "toy-b")
    page.wait_for_function(f"document.querySelectorAll('tr.circuit-row').length === {len(toy_b)}")
    ready(page)
    ids = [int(i) for i in rows.evaluate_all("rows => rows.map(r => r.dataset.id)")]
    assert ids == [c["id"] for c in toy_b]
    assert "model=toy-b" in page.url

    page.click('th[data-sort="n_edges"]')  # largest first
    sizes = [int(t) for t in page.locator("tr.circuit-row td:nth-child(8)").all_inner_texts()]
    assert sizes == sorted((c["n_edges"] for c in toy_b), reverse=True)

    page.select_option("#f-model", "")
    page.wait_for_function(f"document.querySelectorAll('tr.circuit-row').length === {len(everything)}")
    page.select_option("#f-edit", "with")
    edited = [c["id"] for c in everything if (c["model"], c["relation"]) == ("toy-a", "country_capital_city")]
    page.wait_for_function(f"document.querySelectorAll('tr.circuit-row').length === {len(edited)}")
    assert page.locator(f'a[href="/ui/edits/{site.edit_id}"]').count() == len(edited)


def test_circuit_page_graph_and_slider(site: Site, page: Any, screenshots: Path) -> None:
    circuit_id = site.curve_circuit
    detail = site.get(f"/circuits/{circuit_id}")
    page.goto(f"{site.base}/ui/circuits/{circuit_id}")
    ready(page)
    graph = page.locator("#graph svg.circuit")
    assert graph.locator("g.node").count() == len(detail["nodes"]) == detail["n_nodes"]
    assert graph.locator("path.edge").count() == len(detail["edges"]) == detail["n_edges"]
    drawn = set(graph.locator("g.node").evaluate_all("nodes => nodes.map(n => n.dataset.node)"))
    assert drawn == {n["node"] for n in detail["nodes"]}
    assert page.locator("#evaluation tbody tr").count() == 2
    assert page.locator("#curve polyline.series").count() == 1  # the discovery split's stored curve
    assert page.locator("#download-dot").get_attribute("href") == f"/circuits/{circuit_id}/dot"
    assert page.locator("#download-json").get_attribute("href") == f"/circuits/{circuit_id}/eap-ig"
    with page.expect_download() as download:
        page.click("#download-svg")
    svg = Path(download.value.path()).read_text()
    assert svg.count('class="node ') == len(detail["nodes"])
    page.screenshot(path=screenshots / "circuit.png", full_page=True)

    for top_n in (8, 60):
        page.locator("#size").fill(str(top_n))
        page.wait_for_selector(f'main[data-recut="{top_n}"]')
        recut = site.get(f"/circuits/{circuit_id}/recut", top_n=top_n)
        assert graph.locator("path.edge").count() == recut["n_edges"] == len(recut["edges"])
        assert graph.locator("g.node").count() == len(recut["nodes"])
    assert recut["n_edges"] != detail["n_edges"]
    page.screenshot(path=screenshots / "circuit-recut.png", full_page=True)
    page.click("#reset")
    assert graph.locator("path.edge").count() == detail["n_edges"]


def test_circuit_page_draws_stable_members_solid_and_unstable_ones_faded(site: Site, page: Any) -> None:
    circuit_id = site.curve_circuit
    detail = site.get(f"/circuits/{circuit_id}")
    page.goto(f"{site.base}/ui/circuits/{circuit_id}")
    ready(page)
    graph = page.locator("#graph svg.circuit")

    def drawn(selector: str, key: str) -> dict[str, str]:
        return dict(
            graph.locator(selector).evaluate_all(
                f"els => els.map(e => [e.dataset.{key}, e.getAttribute('class')])"
            )
        )

    edges, nodes = drawn("path.edge", "edge"), drawn("g.node", "node")
    expected_edges = {e["edge"]: "stable" if e["stability"] >= 0.8 else "unstable" for e in detail["edges"]}
    assert {name: classes.split()[-1] for name, classes in edges.items()} == expected_edges
    assert set(expected_edges.values()) == {"stable", "unstable"}  # both drawn
    for n in detail["nodes"]:
        if n["node"] in ("input", "logits"):
            assert "stable" not in nodes[n["node"]]
        else:
            assert nodes[n["node"]].split()[-1] == ("stable" if n["stability"] >= 0.8 else "unstable")
    opacity = "e => getComputedStyle(e).opacity"
    stable = next(name for name, kind in expected_edges.items() if kind == "stable")
    unstable = next(name for name, kind in expected_edges.items() if kind == "unstable")
    solid = float(graph.locator(f'path.edge[data-edge="{stable}"]').evaluate(opacity))
    faded = float(graph.locator(f'path.edge[data-edge="{unstable}"]').evaluate(opacity))
    assert solid > 0.9 and faded < 0.3
    assert "80%" in page.locator("#stability-legend").inner_text()
    page.locator("#size").fill("8")  # a re-cut has no bootstrap: nothing faded
    page.wait_for_selector('main[data-recut="8"]')
    assert graph.locator("path.edge.unstable").count() == graph.locator("path.edge.stable").count() == 0


def test_node_level_circuit(site: Site, page: Any) -> None:
    circuit_id = site.catalogue.node_circuit
    detail = site.get(f"/circuits/{circuit_id}")
    page.goto(f"{site.base}/ui/circuits/{circuit_id}")
    ready(page)
    assert page.locator("#graph g.node").count() == len(detail["nodes"])
    assert page.locator("#no-curve").count() == 1


def test_unknown_circuit_and_edit(site: Site, page: Any, console: Console) -> None:
    console.allow("404")  # the page itself answers 404; chromium logs that
    for path, text in (
        ("/ui/circuits/999999", "no circuit with id '999999'"),
        ("/ui/circuits/abc", "no circuit with id 'abc'"),
        ("/ui/edits/424242", "no knowledge edit with id '424242'"),
    ):
        response = page.goto(f"{site.base}{path}")
        assert response.status == 404
        assert text in page.locator("#page-error").inner_text()
    page.goto(f"{site.base}/ui/compare?ids=1&ids=999999")
    ready(page)
    assert "no circuit with id 999999" in page.locator("#page-error").inner_text()


def test_recurrence_heatmap_and_overlap(site: Site, page: Any, screenshots: Path) -> None:
    model = next(m for m in site.get("/models")["items"] if m["name"] == "toy-a")
    recurring = site.get("/components/recurring", model="toy-a", min_count=1)["components"]
    page.goto(f"{site.base}/ui/recurring?model=toy-a")
    ready(page)
    cells = page.locator("#heatmap-svg rect.cell")
    assert cells.count() == model["n_layers"] * model["n_heads"]
    assert page.locator("#heatmap-svg rect.cell-mlp").count() == model["n_layers"]
    counts = {c["component"]: c["n_relations"] for c in recurring}
    shown = dict(
        cells.evaluate_all("cells => cells.map(c => [c.dataset.component, Number(c.dataset.count)])")
    )
    assert {k: v for k, v in shown.items() if v} == {k: v for k, v in counts.items() if k.startswith("a")}
    busiest = max((c for c in recurring if c["kind"] == "head"), key=lambda c: c["n_relations"])
    page.click(f'#heatmap-svg rect[data-component="{busiest["component"]}"]')
    page.wait_for_selector("#cell-relations")
    assert page.locator("#cell-relations tbody tr").count() == busiest["n_relations"]
    n_circuits = len(site.get("/overlap", model="toy-a")["circuits"])
    assert page.locator("#overlap-canvas").get_attribute("data-n") == str(n_circuits)
    page.screenshot(path=screenshots / "recurring.png", full_page=True)

    page.select_option("#f-category", "linguistic")
    ready(page)
    page.wait_for_function("document.querySelector('#heatmap-svg') !== null")
    assert page.locator("#heatmap-svg rect.cell").count() == model["n_layers"] * model["n_heads"]


def shade_of(enrichment: float | None) -> str:
    """The heatmap's colour of an enrichment, restated: white-ish at 1x or less, dark blue from 8x (log2)."""
    t = 0.0 if enrichment is None or not enrichment > 1 else min(1.0, math.log2(enrichment) / 3)
    r, g, b = (round(start - t * (start - end)) for start, end in ((245, 23), (247, 63), (250, 140)))
    return f"rgb({r},{g},{b})"


def cells_of(page: Any) -> dict[str, dict[str, Any]]:
    return {
        c["component"]: c
        for c in page.locator("#heatmap-svg rect.cell, #heatmap-svg rect.cell-mlp").evaluate_all(
            """cells => cells.map(c => ({component: c.dataset.component, count: Number(c.dataset.count),
                fill: c.getAttribute("fill"), q: c.dataset.q, classes: c.getAttribute("class"),
                title: c.querySelector("title").textContent}))"""
        )
    }


def test_recurrence_heatmap_colours_by_enrichment_and_filters_by_q(
    site: Site, page: Any, screenshots: Path
) -> None:
    """toy-planted: one head planted in every relation's circuit (and the controls'), the rest noise."""
    body = site.get("/components/recurring", model=PLANTED_MODEL.name, min_count=1)
    recurring = {c["component"]: c for c in body["components"]}
    page.goto(f"{site.base}/ui/recurring?model={PLANTED_MODEL.name}")
    ready(page)
    cells = cells_of(page)
    assert len(cells) == PLANTED_MODEL.n_layers * (PLANTED_MODEL.n_heads + 1)
    for name, cell in cells.items():
        entry = recurring.get(name)
        assert cell["count"] == (entry["n_relations"] if entry else 0)
        assert cell["fill"] == shade_of(entry["enrichment"] if entry else None), name
        if entry:  # counts, expected, q on hover
            assert f"in the circuits of {entry['n_relations']} relation" in cell["title"]
            assert f"{entry['expected']:.2f} expected" in cell["title"]
    planted = cells[PLANTED_HEAD]
    assert recurring[PLANTED_HEAD]["q_value"] < 0.001 and "generic" in planted["classes"]
    assert planted["fill"] == shade_of(8.0)  # the darkest: enrichment far above 8x
    options = page.locator("#f-category option").evaluate_all("options => options.map(o => o.value)")
    assert options == ["", *CATEGORIES]  # the control category too
    summary = page.locator("#recurring-summary").inner_text()
    assert f"{body['n_relations']} relations" in summary and "copy_name, copy_word" in summary
    page.screenshot(path=screenshots / "recurring-enrichment.png", full_page=True)

    page.select_option("#f-max-q", "0.01")
    page.wait_for_function("new URLSearchParams(location.search).get('max_q') === '0.01'")
    ready(page)
    significant = site.get("/components/recurring", model=PLANTED_MODEL.name, min_count=1, max_q=0.01)
    shown = {name for name, cell in cells_of(page).items() if cell["count"]}
    assert shown == {c["component"] for c in significant["components"]} == {PLANTED_HEAD}
    page.check("#f-exclude-generic")
    page.wait_for_function("new URLSearchParams(location.search).get('exclude_generic') === 'true'")
    ready(page)
    assert not any(cell["count"] for cell in cells_of(page).values())  # the planted head recurs in controls
    page.click(f'#heatmap-svg rect[data-component="{PLANTED_HEAD}"]')
    page.wait_for_selector("#cell-detail h2")
    assert PLANTED_HEAD in page.locator("#cell-detail").inner_text()


def test_compare_highlights_shared_edges(site: Site, page: Any, screenshots: Path) -> None:
    a = site.catalogue.circuits[("toy-a", "country_capital_city", "eap-ig")]
    b = site.catalogue.circuits[("toy-a", "country_capital_city", "eap")]
    comparison = site.get(f"/compare?ids={a}&ids={b}")
    assert comparison["shared_edges"], "the synthetic circuits share edges"
    page.goto(f"{site.base}/ui/compare?ids={a}&ids={b}")
    ready(page)
    for circuit_id in (a, b):
        shared = page.locator(f"#graph-{circuit_id} path.edge.shared")
        assert shared.count() == len(comparison["shared_edges"])
        names = set(shared.evaluate_all("edges => edges.map(e => e.dataset.edge)"))
        assert names == set(comparison["shared_edges"])
        nodes = page.locator(f"#graph-{circuit_id} g.node.shared").count()
        assert nodes == len(comparison["shared_nodes"])
    page.screenshot(path=screenshots / "compare.png", full_page=True)


def test_edit_page_before_and_after(site: Site, page: Any, screenshots: Path) -> None:
    """What the page draws and writes is what the API says the edit is (GET /edits/{id})."""
    edit = site.get(f"/edits/{site.edit_id}")
    diff = edit["diff"]
    page.goto(f"{site.base}/ui/edits/{site.edit_id}")
    ready(page)
    text = page.locator("h1").inner_text()
    assert all(edit[key] in text for key in ("subject", "old_object", "new_object"))

    def names(selector: str) -> list[str]:
        return sorted(page.locator(selector).evaluate_all("edges => edges.map(e => e.dataset.edge)"))

    kept = {change["edge"] for change in diff["rescored"]}
    assert names("#graph-before path.edge.lost") == sorted(diff["edges_lost"]) and diff["edges_lost"]
    assert names("#graph-after path.edge.gained") == sorted(diff["edges_gained"]) and diff["edges_gained"]
    assert names("#graph-before path.edge") == sorted(kept | set(diff["edges_lost"]))
    assert names("#graph-after path.edge") == sorted(kept | set(diff["edges_gained"]))
    summary = page.locator("#diff-summary").inner_text()
    nodes = [len(diff[f"nodes_{change}"]) for change in ("gained", "lost", "kept")]
    assert "Heads and MLPs: {} gained, {} lost, {} kept.".format(*nodes) in summary
    edges = (len(diff["edges_gained"]), len(diff["edges_lost"]), diff["n_edges_kept"])
    assert "Edges: {} gained, {} lost, {} kept.".format(*edges) in summary
    rows = page.locator("#edit-components tbody tr")
    shown = [tuple(row.locator("td").all_inner_texts()[:2]) for row in rows.all()]
    assert shown == [(c["component"], c["change"]) for c in edit["components"]] and shown
    outcome = dict(
        page.locator("#edit-outcome tr").evaluate_all(
            "rows => rows.map(r => [r.querySelector('th').textContent, r.querySelector('td').textContent])"
        )
    )
    assert set(outcome) == set(edit["outcome"])
    for key, value in edit["outcome"].items():
        assert float(outcome[key]) == pytest.approx(value, abs=5e-5), key
    page.screenshot(path=screenshots / "edit.png", full_page=True)


def test_jobs_page_and_form_without_token(site: Site, page: Any, console: Console, screenshots: Path) -> None:
    console.allow("401")  # the refused POST: chromium logs the failed request
    jobs = site.get("/jobs")["items"]
    page.goto(f"{site.base}/ui/jobs")
    ready(page)
    rows = page.locator("tr.job-row")
    assert rows.count() == len(jobs) >= 1
    assert page.locator(f'tr.job-row[data-id="{site.job_id}"]').get_attribute("data-status") == "queued"
    page.fill("#relations", "country_capital_city")
    page.fill("#model", "toy-a")
    page.click("#submit-job")
    message = page.locator("#job-message.error")
    message.wait_for()
    assert re.search(r"401: writes need a bearer token", message.inner_text())
    assert len(site.get("/jobs")["items"]) == len(jobs)  # nothing queued
    page.screenshot(path=screenshots / "jobs.png", full_page=True)


def test_root_redirects_and_assets_are_local(site: Site) -> None:
    response = httpx.get(f"{site.base}/", follow_redirects=False)
    assert response.status_code in (302, 307) and response.headers["location"] == "/ui"
    for asset in sorted(STATIC.iterdir()):
        served = httpx.get(f"{site.base}/static/{asset.name}")
        assert served.status_code == 200, asset.name
        # No CDN, no remote font or script: the only URL is the SVG namespace.
        urls = set(re.findall(r"https?://[^\s\"'`)]+", asset.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (asset.name, urls)
    shell = httpx.get(f"{site.base}/ui").text
    assert not re.search(r"(src|href)=\"https?://", shell)


NO_TORCH = """
import json, sys
from fastapi.testclient import TestClient
from api.app import create_app
from atlas.spec.config import Settings

client = TestClient(create_app(Settings(database_url=sys.argv[1])))
paths = ["/ui", "/ui/circuits/1", "/ui/recurring", "/ui/compare?ids=1&ids=2", "/ui/edits/1", "/ui/jobs",
         "/static/circuit.js"]
print(json.dumps({"statuses": [client.get(p).status_code for p in paths], "torch": "torch" in sys.modules}))
"""


def test_pages_never_import_torch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, f"sqlite:///{tmp_path / 'atlas.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"statuses": [200, 404, 200, 200, 404, 200, 200], "torch": False}
