// The circuit as a layered SVG graph: input at the bottom, logits at the top, one row per layer with the
// layer's heads (by head index) and its MLP (rightmost); edge width by |score|, the head input an edge feeds
// (q, k, v) by colour, negative scores dashed, heads coloured by role where roles are known.

import { h, s } from "./common.js";

const HEAD = /^a(\d+)\.h(\d+)$/;
const MLP = /^m(\d+)$/;

export const PORT_COLORS = { q: "#7b3fbf", k: "#12908e", v: "#d9730d", "": "#1f5fbf" };
export const ROLE_COLORS = {
  mover: "#f4a6a6",
  relation: "#b9a7f0",
  mix: "#f0b3e2",
  other: "#d5dae3",
};
export const NODE_COLORS = { input: "#d9d9d9", head: "#cfe2ff", mlp: "#ffe0b3", logits: "#c7f0c7" };

export function parseNode(name) {
  if (name === "input" || name === "logits") return { kind: name, layer: null, head: null };
  let match = HEAD.exec(name);
  if (match) return { kind: "head", layer: Number(match[1]), head: Number(match[2]) };
  match = MLP.exec(name);
  if (match) return { kind: "mlp", layer: Number(match[1]), head: null };
  return { kind: "other", layer: null, head: null };
}

export function parseEdge(name) {
  const [writer, rest = ""] = name.split("->");
  const open = rest.indexOf("<");
  if (open < 0) return { writer, reader: rest, port: "" };
  return { writer, reader: rest.slice(0, open), port: rest.slice(open + 1, rest.indexOf(">", open)) };
}

/** Head roles of a circuit detail, whatever shape they come in: `roles` as {node: role} or
 * {node: {role}} or [{component|node, role}], or a `role` on each node; an empty map when absent. */
export function rolesOf(detail) {
  const roles = new Map();
  const source = detail && detail.roles;
  if (Array.isArray(source)) {
    for (const entry of source) {
      const name = entry && (entry.component || entry.node || entry.head || entry.name);
      if (name && entry.role) roles.set(name, entry.role);
    }
  } else if (source && typeof source === "object") {
    for (const [name, value] of Object.entries(source)) {
      if (typeof value === "string") roles.set(name, value);
      else if (value && typeof value === "object" && typeof value.role === "string") roles.set(name, value.role);
    }
  }
  for (const node of (detail && detail.nodes) || []) {
    if (node && typeof node.role === "string") roles.set(node.node, node.role);
  }
  return roles;
}

/** The model's shape from a circuit detail (its reproducibility record), else from the node names. */
export function shapeOf(detail) {
  const model = detail.reproducibility && detail.reproducibility.model;
  if (model && model.n_layers && model.n_heads) return { nLayers: model.n_layers, nHeads: model.n_heads };
  let nLayers = 1;
  let nHeads = 1;
  for (const { node } of detail.nodes || []) {
    const parsed = parseNode(node);
    if (parsed.layer !== null) nLayers = Math.max(nLayers, parsed.layer + 1);
    if (parsed.head !== null) nHeads = Math.max(nHeads, parsed.head + 1);
  }
  return { nLayers, nHeads };
}

const COL = 58;
const NODE_W = 46;
const NODE_H = 16;
const LEFT = 34;
const TOP = 16;

// A member kept by at least this share of bootstrap resamples is drawn solid, else faded (atlas/core/stability.py
// STABLE; a circuit's own `stability.stable_share` overrides it).
export const STABLE = 0.8;

/** "stable" or "unstable" for a member with a bootstrap stability, "" without one (a re-cut, no bootstrap). */
function stabilityClass(stability, stableShare) {
  if (stability === null || stability === undefined || !Number.isFinite(stability)) return "";
  return stability >= stableShare ? "stable" : "unstable";
}

/**
 * Draw a circuit. options: nLayers, nHeads, nodes [{node, score, stability}], edges [{edge, score, stability}],
 * roles (Map), stableShare (members below it are faded; default STABLE),
 * edgeClass(name) -> extra class ("shared", "gained", ...), nodeClass(name), edgeColor(name, port) -> colour
 * overriding the port's, highlighting (fade edges without a class), label (aria-label).
 */
export function drawCircuit(options) {
  const { nLayers, nHeads } = options;
  const roles = options.roles || new Map();
  const columns = nHeads + 1;
  // rows of 34 px for a deep model (SmolLM2: 30 layers), up to 80 px for a shallow one
  const ROW = Math.round(Math.max(34, Math.min(80, 480 / (nLayers + 2))));
  const width = LEFT + columns * COL + 10;
  const height = TOP * 2 + (nLayers + 1) * ROW + NODE_H;
  const svg = s("svg", {
    xmlns: "http://www.w3.org/2000/svg",
    class: `circuit${options.highlighting ? " highlighting" : ""}`,
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": options.label || "circuit graph",
  });
  svg.append(
    s("style", {}, "text{font:9px sans-serif}.row-label{fill:#8a93a3}.edge{fill:none}")
  );
  const rowY = (row) => TOP + NODE_H / 2 + (nLayers + 1 - row) * ROW;
  const center = LEFT + (columns * COL) / 2;
  const place = (name) => {
    const parsed = parseNode(name);
    if (parsed.kind === "input") return { ...parsed, x: center, y: rowY(0) };
    if (parsed.kind === "logits") return { ...parsed, x: center, y: rowY(nLayers + 1) };
    const column = parsed.kind === "head" ? parsed.head : nHeads;
    return { ...parsed, x: LEFT + column * COL + COL / 2, y: rowY(parsed.layer + 1) };
  };

  const guides = s("g", { class: "guides" });
  for (let layer = 0; layer < nLayers; layer += 1) {
    const y = rowY(layer + 1);
    guides.append(
      s("line", { class: "row-line", x1: LEFT, x2: width - 10, y1: y, y2: y, stroke: "#eef1f5" }),
      s("text", { class: "row-label", x: 2, y: y + 3 }, `L${layer}`)
    );
  }
  svg.append(guides);

  const positions = new Map();
  for (const { node } of options.nodes) positions.set(node, place(node));
  const finite = options.edges.map((e) => Math.abs(e.score || 0)).filter(Number.isFinite);
  const top = Math.max(...finite, 0) || 1;
  const edgeLayer = s("g", { class: "edges" });
  const offsets = { q: -12, k: 0, v: 12, "": 0 };
  const stableShare = options.stableShare ?? STABLE;
  for (const { edge, score, stability } of options.edges) {
    const { writer, reader, port } = parseEdge(edge);
    const from = positions.get(writer) || place(writer);
    const to = positions.get(reader) || place(reader);
    const x1 = from.x;
    const y1 = from.y - NODE_H / 2;
    const x2 = to.x + (offsets[port] || 0);
    const y2 = to.y + NODE_H / 2;
    const bend = Math.max(14, Math.abs(y1 - y2) / 2);
    const extra = [options.edgeClass ? options.edgeClass(edge) : "", stabilityClass(stability, stableShare)].filter(Boolean).join(" ");
    const colour = (options.edgeColor && options.edgeColor(edge, port)) || PORT_COLORS[port] || PORT_COLORS[""];
    const value = Number.isFinite(score) ? score : 0;
    const path = s(
      "path",
      {
        class: `edge${extra ? ` ${extra}` : ""}`,
        "data-edge": edge,
        "data-stability": Number.isFinite(stability) ? stability : null,
        d: `M${x1},${y1} C${x1},${y1 - bend} ${x2},${y2 + bend} ${x2},${y2}`,
        stroke: colour,
        "stroke-width": (0.6 + (4.4 * Math.abs(value)) / top).toFixed(2),
        "stroke-dasharray": value < 0 ? "4 3" : null,
        fill: "none",
      },
      s("title", {}, `${edge}  score ${score === null || score === undefined ? "—" : score.toPrecision(4)}${Number.isFinite(stability) ? `  stability ${stability.toFixed(2)}` : ""}`)
    );
    edgeLayer.append(path);
  }
  svg.append(edgeLayer);

  const nodeLayer = s("g", { class: "nodes" });
  for (const { node, score, stability } of options.nodes) {
    const at = positions.get(node);
    const role = roles.get(node);
    const fill = at.kind === "head" && role && ROLE_COLORS[role] ? ROLE_COLORS[role] : NODE_COLORS[at.kind] || "#eee";
    const member = at.kind === "head" || at.kind === "mlp" ? stabilityClass(stability, stableShare) : "";
    const extra = [options.nodeClass ? options.nodeClass(node) : "", member].filter(Boolean).join(" ");
    const wide = at.kind === "input" || at.kind === "logits" ? NODE_W * 1.4 : NODE_W;
    const tip = [
      node,
      role ? `role ${role}` : null,
      Number.isFinite(score) ? `score ${score.toPrecision(4)}` : null,
      Number.isFinite(stability) ? `stability ${stability.toFixed(2)}` : null,
    ]
      .filter(Boolean)
      .join("  ");
    nodeLayer.append(
      s(
        "g",
        {
          class: `node ${at.kind}${extra ? ` ${extra}` : ""}`,
          "data-node": node,
          "data-role": role || null,
          "data-stability": Number.isFinite(stability) ? stability : null,
          transform: `translate(${at.x},${at.y})`,
        },
        s("rect", { x: -wide / 2, y: -NODE_H / 2, width: wide, height: NODE_H, rx: 4, fill }),
        s("text", { "text-anchor": "middle", y: 3 }, node),
        s("title", {}, tip)
      )
    );
  }
  svg.append(nodeLayer);
  svg.dataset.nodes = String(options.nodes.length);
  svg.dataset.edges = String(options.edges.length);
  return svg;
}

/** The legend of drawCircuit's colours (the roles present, if any; the stability rule if `stableShare`). */
export function legend(roles, stableShare = null) {
  const items = [
    ["input", NODE_COLORS.input],
    ["head", NODE_COLORS.head],
    ["MLP", NODE_COLORS.mlp],
    ["logits", NODE_COLORS.logits],
  ];
  const present = new Set(roles ? roles.values() : []);
  for (const role of Object.keys(ROLE_COLORS)) if (present.has(role)) items.push([`${role} head`, ROLE_COLORS[role]]);
  return h(
    "div",
    { className: "legend" },
    items.map(([label, colour]) => h("span", {}, h("span", { className: "swatch", style: `background:${colour}` }), label)),
    Object.entries({ "→ q": "q", "→ k": "k", "→ v": "v", "→ MLP / logits": "" }).map(([label, port]) =>
      h("span", {}, h("span", { className: "line-swatch", style: `border-color:${PORT_COLORS[port]}` }), label)
    ),
    h("span", {}, h("span", { className: "line-swatch", style: "border-top-style:dashed;border-color:#555" }), "negative score"),
    h("span", {}, "width: |score|"),
    stableShare === null
      ? null
      : h("span", { id: "stability-legend" }, `faded: kept by fewer than ${Math.round(100 * stableShare)}% of bootstrap resamples`)
  );
}

/** A small line plot of points [{x, y}] (one or more series) as SVG. */
export function linePlot(series, { width = 320, height = 180, xLabel = "", yLabel = "" } = {}) {
  const left = 40;
  const bottom = 28;
  const all = series.flatMap((one) => one.points);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y).filter(Number.isFinite);
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const yMin = Math.min(0, ...ys);
  const yMax = Math.max(1, ...ys);
  const X = (x) => left + ((x - xMin) / (xMax - xMin || 1)) * (width - left - 10);
  const Y = (y) => 8 + (1 - (y - yMin) / (yMax - yMin || 1)) * (height - bottom - 8);
  const svg = s("svg", { class: "plot", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(
    s("line", { x1: left, x2: width - 10, y1: Y(yMin), y2: Y(yMin), stroke: "#999" }),
    s("line", { x1: left, x2: left, y1: 8, y2: height - bottom, stroke: "#999" }),
    s("text", { x: left - 4, y: Y(yMax) + 4, "text-anchor": "end", "font-size": 9 }, yMax.toFixed(1)),
    s("text", { x: left - 4, y: Y(yMin) + 4, "text-anchor": "end", "font-size": 9 }, yMin.toFixed(1)),
    s("text", { x: X(xMin), y: height - bottom + 12, "font-size": 9 }, String(xMin)),
    s("text", { x: X(xMax), y: height - bottom + 12, "text-anchor": "end", "font-size": 9 }, String(xMax)),
    s("text", { x: (left + width) / 2, y: height - 4, "text-anchor": "middle", "font-size": 10 }, xLabel),
    s("text", { x: 10, y: height / 2, transform: `rotate(-90 10 ${height / 2})`, "text-anchor": "middle", "font-size": 10 }, yLabel)
  );
  if (yMin < 1 && yMax >= 1) {
    svg.append(s("line", { x1: left, x2: width - 10, y1: Y(1), y2: Y(1), stroke: "#ccc", "stroke-dasharray": "3 3" }));
  }
  for (const one of series) {
    const points = one.points.filter((p) => Number.isFinite(p.y));
    svg.append(
      s("polyline", {
        class: "series",
        fill: "none",
        stroke: one.colour,
        "stroke-width": 1.8,
        points: points.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" "),
      }),
      ...points.map((p) => s("circle", { cx: X(p.x), cy: Y(p.y), r: 2.2, fill: one.colour }))
    );
  }
  return svg;
}
