// Recurrence: a layer x head heatmap (and an MLP column) of how many relations' circuits contain each head,
// for a model and category; a click lists the relations and circuits behind a cell. Below it, the overlap
// matrix (node or edge Jaccard) of the model's circuits.

import { CATEGORIES, allPages, api, fmt, h, main, methods, s, select, setQuery, showError } from "./common.js";

const params = new URLSearchParams(location.search);
const CELL = 26;

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
  const [categoryLabel, categorySelect] = select("category", "category", [["", "all categories"], ...CATEGORIES.map((c) => [c, c])], params.get("category") || "");
  const methodList = await methods();
  const [methodLabel, methodSelect] = select("method", "method", [["", "all methods"], ...methodList.map((m) => [m.name, m.name])], params.get("method") || "");
  const [matrixLabel, matrixSelect] = select("matrix", "overlap of", [["edge_jaccard", "edges (Jaccard)"], ["node_jaccard", "heads and MLPs (Jaccard)"]], params.get("matrix") || "edge_jaccard");
  const heat = h("div", { id: "heatmap" });
  const detail = h("div", { id: "cell-detail", className: "panel" }, h("p", { className: "muted" }, "Click a cell for the relations and circuits behind it."));
  const overlap = h("div", { id: "overlap" });
  main.replaceChildren(
    h("h1", {}, "Recurring heads and MLPs"),
    h("form", { className: "filters", id: "filters", onsubmit: (e) => e.preventDefault() }, modelLabel, categoryLabel, methodLabel, matrixLabel),
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
    setQuery({ model: model.name, category: categorySelect.value, method: methodSelect.value, matrix: matrixSelect.value === "edge_jaccard" ? "" : matrixSelect.value });
    heat.replaceChildren(h("p", { className: "loading" }, "Loading…"));
    overlap.replaceChildren(h("p", { className: "loading" }, "Loading…"));
    try {
      const [recurring, matrix] = await Promise.all([
        api(`/components/recurring?${query}&min_count=1`),
        api(`/overlap?${query}`),
      ]);
      overlapData = matrix;
      heat.replaceChildren(heatmap(model, recurring, query, detail));
      overlap.replaceChildren(overlapMatrix(matrix, matrixSelect.value));
    } catch (error) {
      showError(heat, error);
      overlap.replaceChildren();
    }
    main.dataset.ready = "1";
  };
  for (const control of [modelSelect, categorySelect, methodSelect]) control.addEventListener("change", load);
  matrixSelect.addEventListener("change", () => {
    if (overlapData) overlap.replaceChildren(overlapMatrix(overlapData, matrixSelect.value));
    setQuery({ ...Object.fromEntries(new URLSearchParams(location.search)), matrix: matrixSelect.value === "edge_jaccard" ? "" : matrixSelect.value });
  });
  await load();
}

function heatmap(model, recurring, query, detail) {
  const { n_layers: nLayers, n_heads: nHeads } = model;
  const counts = new Map(recurring.components.map((c) => [c.component, c]));
  const most = Math.max(1, ...recurring.components.map((c) => c.n_relations));
  const left = 34;
  const top = 22;
  const width = left + (nHeads + 1) * CELL + CELL + 10;
  const height = top + nLayers * CELL + 30;
  const svg = s("svg", { class: "heatmap", id: "heatmap-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "recurrence heatmap" });
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
      const x = left + head * CELL + (head === nHeads ? CELL : 0);
      const cell = s(
        "rect",
        { class: head < nHeads ? "cell" : "cell-mlp", x, y, width: CELL, height: CELL, fill: shade(n / most), "data-component": name, "data-count": n },
        s("title", {}, `${name}: in the circuits of ${n} relation${n === 1 ? "" : "s"}`)
      );
      cell.addEventListener("click", () => pick(cell, name));
      svg.append(cell);
      if (n > 0) svg.append(s("text", { x: x + CELL / 2, y: y + CELL / 2 + 3, "text-anchor": "middle", fill: n / most > 0.5 ? "white" : "#333", style: `fill:${n / most > 0.5 ? "white" : "#333"}` }, String(n)));
    }
  }
  const scale = h("div", { className: "legend" }, h("span", {}, h("span", { className: "swatch", style: `background:${shade(0)}` }), "0"), h("span", {}, h("span", { className: "swatch", style: `background:${shade(1)}` }), `${most} relations`));
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
