// A knowledge edit before and after: what was edited, its outcome, and the edited fact's circuit before
// (edges lost in red) and after (edges gained in green), from the edit's stored circuit diff; the heads and
// MLPs gained, lost and kept with their scores. The server writes the edit into the page (page-data).

import { fmt, h, main, pageData, showError } from "./common.js";
import { drawCircuit, legend, parseEdge } from "./graph.js";

const { edit } = pageData();

function valueCell(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return fmt(value, 4);
  if (typeof value === "object") return h("code", {}, JSON.stringify(value));
  return String(value);
}

function keyValues(object, id) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h("p", { className: "muted" }, "Nothing stored.");
  return h("table", { id }, h("tbody", {}, entries.map(([key, value]) => h("tr", {}, h("th", {}, key), h("td", {}, valueCell(value))))));
}

function side(diff, which) {
  const kept = (diff.rescored || []).map((change) => ({ edge: change.edge, score: which === "before" ? change.before : change.after }));
  const changed = (which === "before" ? diff.edges_lost : diff.edges_gained) || [];
  const edges = [...kept, ...changed.map((edge) => ({ edge, score: null }))];
  const names = new Set([...(diff.nodes_kept || []), ...((which === "before" ? diff.nodes_lost : diff.nodes_gained) || [])]);
  for (const { edge } of edges) {
    const { writer, reader } = parseEdge(edge);
    names.add(writer);
    names.add(reader);
  }
  const changedSet = new Set(changed);
  const mark = which === "before" ? "lost" : "gained";
  const colour = which === "before" ? "#c0392b" : "#1e7b34";
  const svg = drawCircuit({
    nLayers: edit.n_layers,
    nHeads: edit.n_heads,
    nodes: [...names].map((node) => ({ node, score: null })),
    edges,
    highlighting: true,
    edgeClass: (name) => (changedSet.has(name) ? mark : ""),
    edgeColor: (name) => (changedSet.has(name) ? colour : "#8a93a3"),
    label: `circuit ${which} the edit`,
  });
  svg.id = `graph-${which}`;
  const note = `${names.size} nodes, ${edges.length} edges drawn (${changed.length} ${mark}, ${diff.n_edges_kept ?? kept.length} kept${kept.length < (diff.n_edges_kept ?? 0) ? `, ${kept.length} with scores` : ""})`;
  return h("div", {}, h("h2", {}, which === "before" ? "Before the edit" : "After the edit"), h("p", { className: "muted" }, note), h("div", { className: "figure" }, svg));
}

function start() {
  const title = h("h1", {}, `Edit #${edit.id}: ${edit.subject} — `, h("s", {}, edit.old_object), " → ", h("strong", {}, edit.new_object));
  const summary = keyValues(
    {
      model: edit.model,
      relation: `${edit.relation} (${edit.category})`,
      prompt: edit.prompt,
      method: edit.method,
      layer: edit.layer,
      stored: edit.created_at,
    },
    "edit-summary"
  );
  const diff = edit.diff;
  const graphs = diff
    ? h(
        "div",
        {},
        h(
          "p",
          { id: "diff-summary" },
          `Heads and MLPs: ${(diff.nodes_gained || []).length} gained, ${(diff.nodes_lost || []).length} lost, ${(diff.nodes_kept || []).length} kept. `,
          `Edges: ${(diff.edges_gained || []).length} gained, ${(diff.edges_lost || []).length} lost, ${diff.n_edges_kept ?? "?"} kept. `,
          `Node Jaccard ${fmt(diff.node_jaccard)}, edge Jaccard ${fmt(diff.edge_jaccard)}.`
        ),
        h("div", { className: "legend" }, h("span", {}, h("span", { className: "line-swatch", style: "border-color:#c0392b" }), "lost"), h("span", {}, h("span", { className: "line-swatch", style: "border-color:#1e7b34" }), "gained"), h("span", {}, h("span", { className: "line-swatch", style: "border-color:#8a93a3" }), "kept")),
        legend(new Map()),
        h("div", { className: "side-by-side" }, side(diff, "before"), side(diff, "after"))
      )
    : h("p", { className: "muted", id: "no-diff" }, "This edit stored no circuit diff (the edited fact's circuit was not re-discovered).");
  const components = edit.components.length
    ? h(
        "table",
        { id: "edit-components" },
        h("thead", {}, h("tr", {}, h("th", {}, "component"), h("th", {}, "change"), h("th", { className: "num" }, "score before"), h("th", { className: "num" }, "score after"))),
        h("tbody", {}, edit.components.map((c) => h("tr", { "data-change": c.change }, h("td", {}, c.component), h("td", { className: `change-${c.change}` }, c.change), h("td", { className: "num" }, fmt(c.score_before, 4)), h("td", { className: "num" }, fmt(c.score_after, 4)))))
      )
    : h("p", { className: "muted" }, "No component changes stored.");
  main.replaceChildren(
    title,
    h("div", { className: "layout" }, h("div", {}, h("h2", {}, "What was edited"), summary), h("div", {}, h("h2", {}, "Outcome"), keyValues(edit.outcome, "edit-outcome"))),
    graphs,
    h("h2", {}, "Heads and MLPs of the edited fact's circuit"),
    components,
    h("details", {}, h("summary", {}, "Parameters and weight update"), h("pre", {}, JSON.stringify({ params: edit.params, update: edit.update, seconds: edit.seconds }, null, 1)))
  );
  main.dataset.ready = "1";
}

try {
  start();
} catch (error) {
  showError(main, error);
}
