// Helpers every page shares: fetching the JSON API, building elements, formatting numbers.

export const main = document.getElementById("main");

/** The page's data, written by the server into <script id="page-data">. */
export function pageData() {
  const node = document.getElementById("page-data");
  return node ? JSON.parse(node.textContent || "{}") : {};
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** GET (or another method) a JSON endpoint; an error answer throws ApiError with the API's message. */
export async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Accept: "application/json", ...(options.headers || {}) },
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.message) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, body);
  }
  return body;
}

/** Every item of a keyset-paged listing (following `next`), at most `cap` of them. */
export async function allPages(path, params = {}, cap = 10000) {
  const items = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ ...params, limit: "500" });
    if (after !== null) query.set("after", String(after));
    const page = await api(`${path}?${query}`);
    items.push(...page.items);
    if (page.next === null || items.length >= cap) return { items, truncated: page.next !== null };
    after = page.next;
  }
}

/** h("a", {href: "/"}, "text", child...): an element; attributes starting with "on" are listeners. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "className") element.className = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export const SVG_NS = "http://www.w3.org/2000/svg";

/** s("rect", {x: 1}): an SVG element. */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined) continue;
    element.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return value.toFixed(digits);
}

export function percent(value) {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)}%`;
}

/** Replace an element's content with an error message (and keep the message for tests). */
export function showError(target, error) {
  target.replaceChildren(h("p", { className: "error", id: "page-error" }, error.message || String(error)));
}

export function setQuery(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
    else if (value !== "" && value !== null && value !== undefined) query.set(key, value);
  }
  const text = query.toString();
  history.replaceState(null, "", text ? `${location.pathname}?${text}` : location.pathname);
}

export function select(name, label, options, value) {
  const element = h(
    "select",
    { name, id: `f-${name}` },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))
  );
  return [h("label", { for: `f-${name}` }, label, element), element];
}

/** Download a string as a file. */
export function download(text, filename, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// atlas.spec.corpus.CATEGORIES; "control": tasks that need no stored knowledge (the recurrence baseline).
export const CATEGORIES = ["factual", "commonsense", "linguistic", "bias", "control"];
/** The attribution methods (GET /methods: the registry), the default first; fetched once. */
let methodsOnce = null;
export function methods() {
  methodsOnce = methodsOnce || api("/methods");
  return methodsOnce;
}
