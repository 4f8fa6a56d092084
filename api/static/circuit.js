// One circuit: the layered graph, a size slider that re-cuts it from the stored scores (GET
// /circuits/{id}/recut), the evaluation table and faithfulness curve, downloads (DOT, EAP-IG JSON, SVG).

import { api, download, fmt, h, main, pageData, percent, showError } from "./common.js";
import { STABLE, drawCircuit, legend, linePlot, rolesOf, shapeOf } from "./graph.js";

const { id } = pageData();

/** Edges of the model's graph (a writer feeds every reader after it), the slider's natural end. */
function validEdges(nLayers, nHeads) {
  const readersPerLayer = 3 * nHeads + 1;
  let total = nLayers * readersPerLayer + 1; // from the input
  for (let layer = 0; layer < nLayers; layer += 1) {
    const later = (nLayers - layer - 1) * readersPerLayer + 1;
    total += nHeads * (later + 1) + later; // heads also feed their layer's MLP
  }
  return total;
}

async function start() {
  main.replaceChildren(h("p", { className: "loading" }, `Loading circuit ${id}…`));
  const detail = await api(`/circuits/${id}`);
  const { nLayers, nHeads } = shapeOf(detail);
  const roles = rolesOf(detail);
  // members with a bootstrap stability: stable ones solid, the others faded
  const bootstrapped = detail.nodes.some((n) => Number.isFinite(n.stability));
  const stableShare = (detail.stability && detail.stability.stable_share) || STABLE;
  const nodeLevel = detail.level === "node";
  const unit = nodeLevel ? "nodes" : "edges";
  // the size it was cut at: top-n (pruning may leave fewer edges), else its edge count
  const stored =
    detail.selection === "top_n" && detail.top_n > 0
      ? detail.top_n
      : detail.search && detail.search.n_top
      ? detail.search.n_top
      : nodeLevel
      ? Math.max(1, detail.n_nodes - 2)
      : detail.n_edges;
  const natural = nodeLevel ? nLayers * (nHeads + 1) : validEdges(nLayers, nHeads);
  const maximum = Math.max(1, Math.min(natural, Math.max(4 * stored, 200)));

  const figure = h("div", { className: "figure", id: "graph" });
  const drawn = h("output", { id: "drawn" });
  const slider = h("input", {
    type: "range",
    id: "size",
    min: 1,
    max: maximum,
    step: 1,
    value: Math.min(stored, maximum),
    "aria-label": `${unit} to keep`,
  });
  const sizeLabel = h("span", { id: "size-value" }, String(slider.value));
  const reset = h("button", { type: "button", className: "secondary", id: "reset" }, "stored circuit");
  const status = h("span", { id: "recut-status", className: "muted" });
  let current = null;

  const show = (nodes, edges, topN) => {
    current = drawCircuit({
      nLayers,
      nHeads,
      nodes,
      edges,
      roles,
      stableShare,
      label: `circuit ${id}: ${nodes.length} nodes, ${edges.length} edges`,
    });
    if (topN !== null) current.dataset.topN = String(topN);
    figure.replaceChildren(current);
    drawn.textContent = `drawn: ${nodes.length} nodes, ${edges.length} edges`;
  };

  let sequence = 0;
  let timer = null;
  const recut = async () => {
    const topN = Number(slider.value);
    const mine = (sequence += 1);
    status.textContent = "re-cutting…";
    try {
      const answer = await api(`/circuits/${id}/recut?top_n=${topN}`);
      if (mine !== sequence) return;
      show(answer.nodes, answer.edges, topN);
      status.textContent = `re-cut at ${topN} ${unit} from the stored scores`;
      main.dataset.recut = String(topN);
    } catch (error) {
      if (mine === sequence) status.textContent = error.message;
    }
  };
  slider.addEventListener("input", () => {
    sizeLabel.textContent = slider.value;
    clearTimeout(timer);
    timer = setTimeout(recut, 150);
  });
  reset.addEventListener("click", () => {
    clearTimeout(timer);
    sequence += 1;
    slider.value = String(Math.min(stored, maximum));
    sizeLabel.textContent = slider.value;
    show(detail.nodes, detail.edges, null);
    status.textContent = "the stored circuit";
    delete main.dataset.recut;
  });

  const search = detail.search;
  const selection =
    detail.selection === "threshold"
      ? `|score| ≥ ${fmt(detail.threshold, 4)}`
      : search
      ? `the smallest top-|score| circuit with faithfulness ≥ ${fmt(search.target)} (${search.target_met ? "met" : "NOT met"} within ${fmt(search.cap)} ${unit}; ${fmt(search.n_top)} taken)`
      : `top ${fmt(detail.top_n)} ${unit}`;
  const summary = h(
    "table",
    { id: "summary" },
    h(
      "tbody",
      {},
      [
        ["model", h("a", { href: `/ui?model=${encodeURIComponent(detail.model)}` }, detail.model), `${nLayers} layers × ${nHeads} heads`],
        ["relation", h("a", { href: `/ui?relation=${encodeURIComponent(detail.relation)}` }, detail.relation), detail.category],
        ["method", `${detail.method}${detail.ig_steps > 1 ? ` (${detail.ig_steps} steps)` : ""}, ${detail.metric}`, `${detail.level}-level, ${selection}`],
        ["size", `${fmt(detail.n_nodes)} nodes, ${fmt(detail.n_edges)} edges`, `random baseline: ${fmt(detail.n_random_edges)} edges`],
        ["stored", detail.created_at, ""],
      ].map(([key, value, note]) => h("tr", {}, h("th", {}, key), h("td", {}, value), h("td", { className: "muted" }, note)))
    )
  );

  const downloads = h(
    "div",
    { className: "downloads" },
    "Download:",
    h("a", { href: `/circuits/${id}/dot`, download: `circuit-${id}.dot`, id: "download-dot" }, "DOT"),
    h("a", { href: `/circuits/${id}/eap-ig`, download: `circuit-${id}.eap-ig.json`, id: "download-json" }, "JSON (EAP-IG graph)"),
    h("a", { href: `/circuits/${id}`, download: `circuit-${id}.json` }, "JSON (circuit)"),
    h(
      "a",
      {
        href: "#",
        id: "download-svg",
        onclick: (event) => {
          event.preventDefault();
          const text = new XMLSerializer().serializeToString(current);
          download(`<?xml version="1.0" encoding="UTF-8"?>\n${text}`, `circuit-${id}.svg`, "image/svg+xml");
        },
      },
      "SVG (as drawn)"
    )
  );

  main.replaceChildren(
    h("h1", {}, `Circuit ${id}: ${detail.model} / ${detail.relation} `, h("span", { className: "tag" }, detail.method)),
    h(
      "div",
      { className: "layout" },
      h(
        "div",
        {},
        h("div", { className: "controls" }, h("label", { className: "inline", for: "size" }, `${unit} to keep`, slider, sizeLabel), reset, drawn, status),
        legend(roles, bootstrapped ? stableShare : null),
        figure,
        downloads
      ),
      h(
        "div",
        { style: "max-width: 520px" },
        summary,
        h("h2", {}, "Evaluation"),
        evaluationTable(detail),
        curve(detail),
        h("p", {}, h("a", { href: `/ui/recurring?model=${encodeURIComponent(detail.model)}&category=${detail.category}` }, "recurring heads of this model and category")),
        h("details", {}, h("summary", {}, "Reproducibility"), h("pre", { id: "reproducibility" }, JSON.stringify({ run: detail.run, ...detail.reproducibility }, null, 1)))
      )
    )
  );
  show(detail.nodes, detail.edges, null);
  performance.mark("circuit-drawn");
  main.dataset.ready = "1";
}

function evaluationTable(detail) {
  const splits = Object.entries(detail.evaluations || {});
  if (!splits.length) return h("p", { className: "muted" }, "Not evaluated.");
  const order = { discovery: 0, heldout: 1 };
  splits.sort((a, b) => (order[a[0]] ?? 9) - (order[b[0]] ?? 9));
  return h(
    "table",
    { id: "evaluation" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", {}, "split"), h("th", { className: "num" }, "facts"), h("th", { className: "num" }, "Hit@10 original"), h("th", { className: "num" }, "circuit"), h("th", { className: "num" }, "random"), h("th", { className: "num" }, "faithfulness"), h("th", { className: "num" }, "random"), h("th", { className: "num" }, "curve area"))
    ),
    h(
      "tbody",
      {},
      splits.map(([split, e]) =>
        h(
          "tr",
          { "data-split": split },
          h("td", {}, split),
          h("td", { className: "num" }, fmt(e.n_facts)),
          h("td", { className: "num" }, percent(e.hit_at_10 && e.hit_at_10.original)),
          h("td", { className: "num" }, percent(e.hit_at_10 && e.hit_at_10.circuit)),
          h("td", { className: "num" }, percent(e.hit_at_10 && e.hit_at_10.random)),
          h("td", { className: "num" }, fmt(e.faithfulness)),
          h("td", { className: "num" }, fmt(e.faithfulness_random)),
          h("td", { className: "num" }, e.curve ? fmt(e.curve.area) : "—")
        )
      )
    )
  );
}

function curve(detail) {
  const colours = { discovery: "#1f5fbf", heldout: "#d9730d" };
  const series = Object.entries(detail.evaluations || {})
    .filter(([, e]) => e.curve && Array.isArray(e.curve.points) && e.curve.points.length)
    .map(([split, e]) => ({
      name: split,
      colour: colours[split] || "#555",
      points: e.curve.points.map((p) => ({ x: p.percent ?? p.n_edges, y: p.faithfulness ?? NaN })),
    }));
  if (!series.length) return h("p", { className: "muted", id: "no-curve" }, "No faithfulness curve stored for this circuit.");
  return h(
    "div",
    { id: "curve" },
    h("h2", {}, "Faithfulness by circuit size"),
    linePlot(series, { xLabel: "% of edges kept", yLabel: "faithfulness" }),
    h("div", { className: "legend" }, series.map((one) => h("span", {}, h("span", { className: "line-swatch", style: `border-color:${one.colour}` }), one.name)))
  );
}

start().catch((error) => showError(main, error));
