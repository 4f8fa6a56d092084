// Recurrence: a layer x head heatmap (and an MLP column) of each head's enrichment, the relations whose circuits
// hold it over the number expected if every circuit were a random connected circuit of its size (counts, q-values
// and flags on hover), for a model and category, filtered by q-value; a click lists the relations and circuits
// behind a cell. Below it, the overlap matrix (node or edge Jaccard) of the model's circuits.

import { CATEGORIES, allPages, api, fmt, h, main, methods, s, select, setQuery, showError } from "./common.js";

const params = new URLSearchParams(location.search);
const CELL = 26;
const Q_CHOICES = [["", "any q"], ["0.05", "q ≤ 0.05"], ["0.01", "q ≤ 0.01"], ["0.001", "q ≤ 0.001"]];

function shade(value) {
  // 0 -> near white, 1 -> dark blue
  const t = Math.max(0, Math.min(1, value));
  const r = Math.round(245 - t * (245 - 23));
  const g = Math.round(247 - t * (247 - 63));
  const b = Math.round(250 - t * (250 - 140));
  return `rgb(${r},${g},${b})`;
}

async function start() {
  const models = (await allPages("/models")).items.filter((m) => m.n_circuits > 0);
  if (!models.length) {
    main.replaceChildren(h("h1", {}, "Recurrence"), h("p", { className: "muted" }, "The catalogue has no circuits yet."));
    return;
  }
  const wanted = params.get("model");
  const [modelLabel, modelSelect] = select(
    "model",
    "model",
    models.map((m) => [m.name, `${m.name} (${m.n_layers}×${m.n_heads}, ${m.n_circuits} circuits)`]),
    models.some((m) => m.name === wanted) ? wanted : models[0].name
  );
  const [categoryLabel, categorySelect] = select("category", "category", [["", "all (controls apart)"], ...CATEGORIES.map((c) => [c, c])], params.get("category") || "");
  const methodList = await methods();
  const [methodLabel, methodSelect] = select("method", "method", [["", "all methods"], ...methodList.map((m) => [m.name, m.name])], params.get("method") || "");
  const [matrixLabel, matrixSelect] = select("matrix", "overlap of", [["edge_jaccard", "edges (Jaccard)"], ["node_jaccard", "heads and MLPs (Jaccard)"]], params.get("matrix") || "edge_jaccard");
  const [qLabel, qSelect] = select("max-q", "q-value", Q_CHOICES, Q_CHOICES.some(([v]) => v === params.get("max_q")) ? params.get("max_q") : "");
  const genericBox = h("input", { type: "checkbox", id: "f-exclude-generic", checked: params.get("exclude_generic") === "true" });
  const genericLabel = h("label", { for: "f-exclude-generic", className: "inline" }, genericBox, " hide generic (recur in controls too)");
  const heat = h("div", { id: "heatmap" });
  const detail = h("div", { id: "cell-detail", className: "panel" }, h("p", { className: "muted" }, "Click a cell for the relations and circuits behind it."));
  const overlap = h("div", { id: "overlap" });
  main.replaceChildren(
    h("h1", {}, "Recurring heads and MLPs"),
    h("form", { className: "filters", id: "filters", onsubmit: (e) => e.preventDefault() }, modelLabel, categoryLabel, methodLabel, qLabel, genericLabel, matrixLabel),
    h("p", { className: "muted", id: "recurring-summary" }),
    h("div", { className: "layout" }, heat, detail),
    h("h2", {}, "Overlap of the model's circuits"),
    overlap
  );

  let overlapData = null;
  const load = async () => {
    main.dataset.ready = "0";
    const model = models.find((m) => m.name === modelSelect.value);
    const query = new URLSearchParams({ model: model.name });
    if (categorySelect.value) query.set("category", categorySelect.value);
    if (methodSelect.value) query.set("method", methodSelect.value);
    const filters = new URLSearchParams(query);
    if (qSelect.value) filters.set("max_q", qSelect.value);
    if (genericBox.checked) filters.set("exclude_generic", "true");
    setQuery({ model: model.name, category: categorySelect.value, method: methodSelect.value, max_q: qSelect.value, exclude_generic: genericBox.checked ? "true" : "", matrix: matrixSelect.value === "edge_jaccard" ? "" : matrixSelect.value });
    heat.replaceChildren(h("p", { className: "loading" }, "Loading…"));
    overlap.replaceChildren(h("p", { className: "loading" }, "Loading…"));
    try {
      const [recurring, matrix] = await Promise.all([
        api(`/components/recurring?${filters}&min_count=1`),
        api(`/overlap?${query}`),
      ]);
      overlapData = matrix;
      heat.replaceChildren(heatmap(model, recurring, query, detail));
      document.getElementById("recurring-summary").textContent = summaryLine(recurring);
      overlap.replaceChildren(overlapMatrix(matrix, matrixSelect.value));
    } catch (error) {
      showError(heat, error);
      overlap.replaceChildren();
    }
    main.dataset.ready = "1";
  };
  for (const control of [modelSelect, categorySelect, methodSelect, qSelect, genericBox]) control.addEventListener("change", load);
  matrixSelect.addEventListener("change", () => {
    if (overlapData) overlap.replaceChildren(overlapMatrix(overlapData, matrixSelect.value));
    setQuery({ ...Object.fromEntries(new URLSearchParams(location.search)), matrix: matrixSelect.value === "edge_jaccard" ? "" : matrixSelect.value });
  });
  await load();
}

function summaryLine(recurring) {
  const left = recurring.n_unmet ? `; ${recurring.n_unmet} left out (faithfulness target not met)` : "";
  const controls = recurring.controls.length ? `; controls: ${recurring.controls.join(", ")}` : "; no control circuits (generic unknown)";
  return `${recurring.n_relations} relations, ${recurring.n_circuits} circuits counted${left}${controls}. Colour: enrichment (relations holding it / expected if each circuit were a random one of its size).`;
}

function enrichmentShade(enrichment) {
  // 1x (what random circuits of these sizes give) or less: near white; 8x or more: dark blue
  if (enrichment === null || enrichment === undefined || !(enrichment > 1)) return shade(0);
  return shade(Math.log2(enrichment) / 3);
}

function cellTitle(name, entry) {
  if (!entry) return `${name}: in no counted circuit (or filtered out)`;
  const flags = [entry.plumbing ? "plumbing" : null, entry.generic ? "generic" : null].filter(Boolean);
  return [
    `${name}: in the circuits of ${entry.n_relations} relation${entry.n_relations === 1 ? "" : "s"}, ${fmt(entry.expected, 2)} expected`,
    `enrichment ${fmt(entry.enrichment, 2)}, q ${entry.q_value === null ? "—" : entry.q_value.toPrecision(2)}`,
    `mean stability ${fmt(entry.mean_stability, 2)}${flags.length ? `; ${flags.join(", ")}` : ""}`,
  ].join("\n");
}

function heatmap(model, recurring, query, detail) {
  const { n_layers: nLayers, n_heads: nHeads } = model;
  const counts = new Map(recurring.components.map((c) => [c.component, c]));
  const most = Math.max(1, ...recurring.components.map((c) => c.enrichment || 0));
  const left = 34;
  const top = 22;
  const width = left + (nHeads + 1) * CELL + CELL + 10;
  const height = top + nLayers * CELL + 30;
  const svg = s("svg", { class: "heatmap", id: "heatmap-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "recurrence heatmap: enrichment over the null" });
  for (let head = 0; head < nHeads; head += 1) {
    svg.append(s("text", { x: left + head * CELL + CELL / 2, y: top - 6, "text-anchor": "middle" }, `h${head}`));
  }
  svg.append(s("text", { x: left + (nHeads + 1) * CELL + CELL / 2, y: top - 6, "text-anchor": "middle" }, "MLP"));
  const pick = (element, name) => {
    svg.querySelectorAll(".selected").forEach((cell) => cell.classList.remove("selected"));
    element.classList.add("selected");
    showCell(name, counts.get(name), query, detail);
  };
  // layer 0 at the bottom, as in the circuit graph
  for (let layer = 0; layer < nLayers; layer += 1) {
    const y = top + (nLayers - 1 - layer) * CELL;
    svg.append(s("text", { x: left - 4, y: y + CELL / 2 + 3, "text-anchor": "end" }, `L${layer}`));
    for (let head = 0; head <= nHeads; head += 1) {
      const name = head < nHeads ? `a${layer}.h${head}` : `m${layer}`;
      const entry = counts.get(name);
      const n = entry ? entry.n_relations : 0;
      const enrichment = entry ? entry.enrichment : null;
      const x = left + head * CELL + (head === nHeads ? CELL : 0);
      const classes = [head < nHeads ? "cell" : "cell-mlp", entry && entry.plumbing ? "plumbing" : "", entry && entry.generic ? "generic" : ""].filter(Boolean).join(" ");
      const cell = s(
        "rect",
        {
          class: classes,
          x,
          y,
          width: CELL,
          height: CELL,
          fill: enrichmentShade(enrichment),
          "data-component": name,
          "data-count": n,
          "data-enrichment": enrichment ?? "",
          "data-q": entry && entry.q_value !== null ? entry.q_value : "",
        },
        s("title", {}, cellTitle(name, entry))
      );
      cell.addEventListener("click", () => pick(cell, name));
      svg.append(cell);
      if (entry && enrichment > 1) {
        const dark = Math.log2(enrichment) / 3 > 0.5;
        svg.append(s("text", { x: x + CELL / 2, y: y + CELL / 2 + 3, "text-anchor": "middle", style: `fill:${dark ? "white" : "#333"}` }, enrichment >= 10 ? enrichment.toFixed(0) : enrichment.toFixed(1)));
      }
    }
  }
  const scale = h(
    "div",
    { className: "legend" },
    h("span", {}, h("span", { className: "swatch", style: `background:${enrichmentShade(1)}` }), "enrichment ≤ 1×"),
    h("span", {}, h("span", { className: "swatch", style: `background:${enrichmentShade(2.83)}` }), "2.8×"),
    h("span", {}, h("span", { className: "swatch", style: `background:${enrichmentShade(8)}` }), "≥ 8×"),
    h("span", {}, `highest here ${fmt(most, 1)}×`),
    h("span", {}, h("span", { className: "swatch plumbing-swatch" }), "plumbing (random circuits almost always hold it)"),
    h("span", {}, h("span", { className: "swatch generic-swatch" }), "generic (recurs in controls too)")
  );
  return h("div", {}, svg, scale);
}

async function showCell(name, entry, query, detail) {
  if (!entry) {
    detail.replaceChildren(h("h2", {}, name), h("p", { className: "muted" }, "In no circuit of these relations."));
    return;
  }
  detail.replaceChildren(h("h2", {}, name), h("p", { className: "loading" }, "Loading…"));
  try {
    const component = await api(`/components/${name}?${query}`);
    const rows = component.models.flatMap((m) =>
      m.relations.map((r) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `/ui?model=${encodeURIComponent(m.model)}&relation=${encodeURIComponent(r.relation)}` }, r.relation)),
          h("td", {}, r.category),
          h("td", {}, r.circuits.map((c, i) => [i ? ", " : "", h("a", { href: `/ui/circuits/${c.id}`, title: `${c.method}, node score ${fmt(c.score)}` }, `#${c.id}`)]))
        )
      )
    );
    detail.replaceChildren(
      h("h2", {}, name),
      h("p", {}, `In the circuits of ${component.n_relations} relation${component.n_relations === 1 ? "" : "s"} (${component.n_circuits} circuits).`),
      h("p", { id: "cell-stats" }, cellTitle(name, entry).split("\n").slice(1).join("; ") + (Object.keys(entry.roles || {}).length ? `; roles: ${Object.entries(entry.roles).map(([role, n]) => `${role} ${n}`).join(", ")}` : "")),
      h("table", { id: "cell-relations" }, h("thead", {}, h("tr", {}, h("th", {}, "relation"), h("th", {}, "category"), h("th", {}, "circuits"))), h("tbody", {}, rows)),
      component.edits.length ? h("p", {}, `Knowledge edits touching it: `, component.edits.map((e, i) => [i ? ", " : "", h("a", { href: `/ui/edits/${e.id}` }, `#${e.id} (${e.change})`)])) : null
    );
  } catch (error) {
    showError(detail, error);
  }
}

function overlapMatrix(matrix, key) {
  const circuits = matrix.circuits;
  const n = circuits.length;
  if (n < 2) return h("p", { className: "muted" }, "Fewer than two circuits: nothing to overlap.");
  const values = matrix[key];
  const size = Math.max(2, Math.min(22, Math.floor(640 / n)));
  const canvas = h("canvas", { className: "overlap", id: "overlap-canvas", width: n * size, height: n * size, "data-n": n });
  const context = canvas.getContext("2d");
  for (let i = 0; i < n; i += 1) {
    for (let j = 0; j < n; j += 1) {
      context.fillStyle = shade(values[i][j]);
      context.fillRect(j * size, i * size, size, size);
    }
  }
  const label = (c) => `#${c.id} ${c.relation} (${c.method})`;
  const hover = h("p", { id: "overlap-hover", className: "muted" }, "Hover a cell for the pair; click it to compare them.");
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    const j = Math.floor(((event.clientX - box.left) / box.width) * n);
    const i = Math.floor(((event.clientY - box.top) / box.height) * n);
    return i >= 0 && j >= 0 && i < n && j < n ? [i, j] : null;
  };
  canvas.addEventListener("mousemove", (event) => {
    const cell = at(event);
    if (cell) hover.textContent = `${label(circuits[cell[0]])} × ${label(circuits[cell[1]])}: ${fmt(values[cell[0]][cell[1]])}`;
  });
  canvas.addEventListener("click", (event) => {
    const cell = at(event);
    if (cell && cell[0] !== cell[1]) location.href = `/ui/compare?ids=${circuits[cell[0]].id}&ids=${circuits[cell[1]].id}`;
  });
  const names = n <= 40 ? h("ol", { className: "muted", style: "columns: 3; font-size: 0.8rem" }, circuits.map((c) => h("li", {}, h("a", { href: `/ui/circuits/${c.id}` }, label(c))))) : null;
  return h("div", {}, h("p", { className: "muted" }, `${n} circuits in id order (rows and columns).`), canvas, hover, names);
}

start().catch((error) => showError(main, error));
