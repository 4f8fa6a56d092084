// The catalogue: every circuit matching the filters (model, relation, category, method, knowledge edits),
// sortable by size and faithfulness, 50 a page. The listing is fetched once per filter (keyset pages of 500
// followed to the end) and sorted and paged here.

import { CATEGORIES, allPages, fmt, h, main, methods, pageData, percent, select, setQuery, showError } from "./common.js";

const PAGE = 50;
const params = new URLSearchParams(location.search);
const edits = pageData().edits || [];
const editsOf = new Map();
for (const edit of edits) {
  const key = `${edit.model}\u0000${edit.relation}`;
  if (!editsOf.has(key)) editsOf.set(key, []);
  editsOf.get(key).push(edit.id);
}

const state = {
  items: [],
  truncated: false,
  sort: params.get("sort") || "id",
  order: params.get("order") || "asc",
  page: Number(params.get("page") || 0),
};

const COLUMNS = [
  ["id", "id", true],
  ["model", "model", false],
  ["relation", "relation", false],
  ["category", "category", false],
  ["method", "method", false],
  ["n_nodes", "nodes", true],
  ["n_edges", "edges", true],
  ["target_met", "target met", true],
  ["faithfulness", "faithfulness", true],
  ["faithfulness_heldout", "held-out", true],
  ["faithfulness_random_heldout", "random", true],
  ["hit_circuit", "Hit@10 circuit", true],
  ["edits", "edits", false],
];

async function start() {
  const [models, relations, methodList] = await Promise.all([allPages("/models"), allPages("/relations"), methods()]);
  const [modelLabel, modelSelect] = select(
    "model",
    "model",
    [["", "all models"], ...models.items.map((m) => [m.name, `${m.name} (${m.n_circuits})`])],
    params.get("model") || ""
  );
  const withCircuits = relations.items.filter((r) => r.n_circuits > 0);
  const [relationLabel, relationSelect] = select(
    "relation",
    "relation",
    [["", "all relations"], ...withCircuits.map((r) => [r.name, `${r.name} (${r.n_circuits})`])],
    params.get("relation") || ""
  );
  const [categoryLabel, categorySelect] = select(
    "category",
    "category",
    [["", "all categories"], ...CATEGORIES.map((c) => [c, c])],
    params.get("category") || ""
  );
  const [methodLabel, methodSelect] = select(
    "method",
    "method",
    [["", "all methods"], ...methodList.map((m) => [m.name, m.name])],
    params.get("method") || ""
  );
  const [editLabel, editSelect] = select(
    "edit",
    "knowledge edits",
    [
      ["", "any"],
      ["with", `with edits (${edits.length})`],
      ["without", "without edits"],
    ],
    params.get("edit") || ""
  );
  const count = h("span", { id: "count", className: "muted" });
  const form = h("form", { className: "filters", id: "filters" }, modelLabel, relationLabel, categoryLabel, methodLabel, editLabel, count);
  const table = h("div", { id: "listing" });
  main.replaceChildren(h("h1", {}, "Catalogue of circuits"), form, table);

  const filters = () => ({
    model: modelSelect.value,
    relation: relationSelect.value,
    category: categorySelect.value,
    method: methodSelect.value,
  });
  const load = async () => {
    table.replaceChildren(h("p", { className: "loading" }, "Loading…"));
    main.dataset.ready = "0";
    const query = Object.fromEntries(Object.entries(filters()).filter(([, v]) => v));
    try {
      const listing = await allPages("/circuits", query);
      state.items = listing.items;
      state.truncated = listing.truncated;
      render(table, count, editSelect.value);
    } catch (error) {
      showError(table, error);
    }
    main.dataset.ready = "1";
  };
  for (const control of [modelSelect, relationSelect, categorySelect, methodSelect]) {
    control.addEventListener("change", () => {
      state.page = 0;
      load();
    });
  }
  editSelect.addEventListener("change", () => {
    state.page = 0;
    render(table, count, editSelect.value);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  await load();
}

function editIds(circuit) {
  return editsOf.get(`${circuit.model}\u0000${circuit.relation}`) || [];
}

function render(table, count, editFilter) {
  let items = state.items;
  if (editFilter === "with") items = items.filter((c) => editIds(c).length > 0);
  if (editFilter === "without") items = items.filter((c) => editIds(c).length === 0);
  const key = state.sort;
  const sign = state.order === "desc" ? -1 : 1;
  items = [...items].sort((a, b) => {
    const x = a[key];
    const y = b[key];
    if (x === y) return a.id - b.id;
    if (x === null || x === undefined) return 1; // missing values last either way
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * sign;
  });
  const pages = Math.max(1, Math.ceil(items.length / PAGE));
  state.page = Math.min(state.page, pages - 1);
  const shown = items.slice(state.page * PAGE, (state.page + 1) * PAGE);
  count.textContent = `${items.length.toLocaleString("en")} circuits${state.truncated ? " (first 10,000: narrow the filters)" : ""}`;
  const form = document.getElementById("filters");
  setQuery({
    ...Object.fromEntries(new FormData(form)),
    sort: state.sort === "id" ? "" : state.sort,
    order: state.order === "asc" ? "" : state.order,
    page: state.page || "",
  });

  const header = h(
    "tr",
    {},
    COLUMNS.map(([field, label, sortable]) => {
      const cell = h("th", { className: `${sortable ? "sortable " : ""}${["id", "edits"].includes(field) || sortable ? "num" : ""}`, "data-sort": sortable ? field : null }, label);
      if (sortable) {
        if (state.sort === field) cell.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
        cell.addEventListener("click", () => {
          state.order = state.sort === field && state.order === "desc" ? "asc" : state.sort === field ? "desc" : field === "id" ? "asc" : "desc";
          state.sort = field;
          render(table, count, editFilter);
        });
      }
      return cell;
    })
  );
  const rows = shown.map((c) =>
    h(
      "tr",
      { className: "circuit-row", "data-id": c.id },
      h("td", { className: "num" }, h("a", { href: `/ui/circuits/${c.id}` }, c.id)),
      h("td", {}, c.model),
      h("td", {}, c.relation),
      h("td", {}, c.category),
      h("td", {}, c.method, c.level === "node" ? h("span", { className: "tag" }, " node") : null),
      h("td", { className: "num" }, fmt(c.n_nodes)),
      h("td", { className: "num" }, fmt(c.n_edges)),
      h("td", { className: "met" }, c.target_met === null || c.target_met === undefined ? "–" : c.target_met ? "yes" : "no"),
      h("td", { className: "num" }, fmt(c.faithfulness)),
      h("td", { className: "num" }, fmt(c.faithfulness_heldout)),
      h("td", { className: "num" }, fmt(c.faithfulness_random_heldout)),
      h("td", { className: "num" }, percent(c.hit_circuit)),
      h("td", { className: "num" }, editIds(c).map((id, i) => [i ? ", " : "", h("a", { href: `/ui/edits/${id}` }, `#${id}`)]))
    )
  );
  const pager = h(
    "div",
    { className: "pager" },
    h("button", { type: "button", className: "secondary", id: "prev", disabled: state.page === 0, onclick: () => { state.page -= 1; render(table, count, editFilter); } }, "← previous"),
    h("span", { id: "page-number" }, `page ${state.page + 1} of ${pages}`),
    h("button", { type: "button", className: "secondary", id: "next", disabled: state.page >= pages - 1, onclick: () => { state.page += 1; render(table, count, editFilter); } }, "next →"),
    h("a", { href: "#", id: "compare-selected", onclick: compareSelected }, "compare checked circuits")
  );
  for (const row of rows) {
    row.prepend(h("td", {}, h("input", { type: "checkbox", className: "pick", value: row.dataset.id, "aria-label": `pick circuit ${row.dataset.id}` })));
  }
  header.prepend(h("th", {}, ""));
  table.replaceChildren(
    items.length ? h("table", { id: "circuits" }, h("thead", {}, header), h("tbody", {}, rows)) : h("p", { className: "muted", id: "empty" }, "No circuit matches these filters."),
    pager
  );
}

function compareSelected(event) {
  event.preventDefault();
  const ids = [...document.querySelectorAll("input.pick:checked")].map((box) => box.value);
  if (ids.length < 2) {
    alert("Check two or more circuits to compare.");
    return;
  }
  location.href = `/ui/compare?${ids.map((id) => `ids=${id}`).join("&")}`;
}

start().catch((error) => showError(main, error));
