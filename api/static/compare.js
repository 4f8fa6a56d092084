// Two (or more) circuits side by side, the edges and heads they share highlighted (GET /compare), with the
// Jaccard of their node and edge sets.

import { api, fmt, h, main, showError } from "./common.js";
import { drawCircuit, legend, rolesOf, shapeOf } from "./graph.js";

const ids = new URLSearchParams(location.search).getAll("ids").flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);

function chooser(message) {
  const input = h("input", { name: "ids", id: "ids-input", value: ids.join(", "), placeholder: "3, 4", size: 20 });
  const form = h(
    "form",
    {
      className: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const chosen = input.value.split(/[\s,]+/).filter(Boolean);
        location.href = `/ui/compare?${chosen.map((id) => `ids=${encodeURIComponent(id)}`).join("&")}`;
      },
    },
    h("label", { for: "ids-input" }, "circuit ids", input),
    h("button", { type: "submit" }, "compare")
  );
  return [h("p", { className: message ? "error" : "muted", id: message ? "page-error" : null }, message || "Circuit ids to compare (two or more); or check circuits in the catalogue."), form];
}

async function start() {
  if (ids.length < 2) {
    main.replaceChildren(h("h1", {}, "Compare circuits"), ...chooser(null));
    main.dataset.ready = "1";
    return;
  }
  main.replaceChildren(h("p", { className: "loading" }, "Loading…"));
  let comparison;
  try {
    comparison = await api(`/compare?${ids.map((id) => `ids=${encodeURIComponent(id)}`).join("&")}`);
  } catch (error) {
    main.replaceChildren(h("h1", {}, "Compare circuits"), ...chooser(error.message));
    main.dataset.ready = "1";
    return;
  }
  const details = await Promise.all(comparison.circuits.map((c) => api(`/circuits/${c.id}`)));
  const sharedEdges = new Set(comparison.shared_edges);
  const sharedNodes = new Set(comparison.shared_nodes);
  const panels = details.map((detail) => {
    const { nLayers, nHeads } = shapeOf(detail);
    const svg = drawCircuit({
      nLayers,
      nHeads,
      nodes: detail.nodes,
      edges: detail.edges,
      roles: rolesOf(detail),
      highlighting: true,
      edgeClass: (edge) => (sharedEdges.has(edge) ? "shared" : ""),
      edgeColor: (edge) => (sharedEdges.has(edge) ? "#d6336c" : null),
      nodeClass: (node) => (sharedNodes.has(node) ? "shared" : ""),
      label: `circuit ${detail.id}`,
    });
    svg.id = `graph-${detail.id}`;
    return h(
      "div",
      { className: "compared", "data-id": detail.id },
      h("h2", {}, h("a", { href: `/ui/circuits/${detail.id}` }, `#${detail.id}`), ` ${detail.model} / ${detail.relation} (${detail.method})`),
      h("p", { className: "muted" }, `${detail.n_nodes} nodes, ${detail.n_edges} edges; ${detail.edges.filter((e) => sharedEdges.has(e.edge)).length} of its edges shared`),
      h("div", { className: "figure" }, svg)
    );
  });
  const pairs = h(
    "table",
    { id: "pairs" },
    h("thead", {}, h("tr", {}, h("th", {}, "a"), h("th", {}, "b"), h("th", { className: "num" }, "node Jaccard"), h("th", { className: "num" }, "edge Jaccard"))),
    h("tbody", {}, comparison.pairwise.map((p) => h("tr", {}, h("td", {}, `#${p.a}`), h("td", {}, `#${p.b}`), h("td", { className: "num" }, fmt(p.node_jaccard)), h("td", { className: "num" }, fmt(p.edge_jaccard)))))
  );
  main.replaceChildren(
    h("h1", {}, `Comparing ${comparison.circuits.map((c) => `#${c.id}`).join(", ")}`),
    h(
      "p",
      { id: "shared-summary" },
      `Shared by all: ${comparison.shared_nodes.length} heads and MLPs, ${comparison.shared_edges.length} edges. `,
      `Node Jaccard ${fmt(comparison.node_jaccard)}, edge Jaccard ${fmt(comparison.edge_jaccard)}.`
    ),
    h("div", { className: "legend" }, h("span", {}, h("span", { className: "line-swatch", style: "border-color:#d6336c" }), "shared edge"), h("span", {}, h("span", { className: "swatch", style: "border:2px solid #d6336c" }), "shared head or MLP")),
    legend(new Map()),
    h("div", { className: "side-by-side" }, panels),
    h("h2", {}, "Pairs"),
    pairs,
    h("details", {}, h("summary", {}, `Shared edges (${comparison.shared_edges.length})`), h("pre", { id: "shared-edges" }, comparison.shared_edges.join("\n")))
  );
  main.dataset.ready = "1";
}

start().catch((error) => showError(main, error));
