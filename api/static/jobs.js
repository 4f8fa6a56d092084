// Jobs: running and finished extraction jobs with their progress, refreshed every 2 s while any is queued or
// running (every 10 s otherwise); and a form that schedules a job (POST /jobs, bearer token).

import { ApiError, allPages, api, h, main, methods, showError } from "./common.js";

const FAST = 2000;
const SLOW = 10000;

function progressBar(done, total) {
  const share = total ? Math.min(1, done / total) : 0;
  return h("span", { className: "progress", title: `${done} of ${total}` }, h("div", { style: `width:${(100 * share).toFixed(1)}%` }));
}

function when(stamp) {
  return stamp ? new Date(stamp).toLocaleString() : "—";
}

function jobRow(job) {
  const p = job.progress;
  const relations = (job.request && job.request.relations) || [];
  return h(
    "tr",
    { className: "job-row", "data-id": job.id, "data-status": job.status },
    h("td", { className: "num" }, job.id),
    h("td", {}, job.kind),
    h("td", {}, job.model),
    h("td", {}, relations.length > 3 ? `${relations.slice(0, 3).join(", ")} +${relations.length - 3}` : relations.join(", ")),
    h("td", { className: `status-${job.status}` }, job.status),
    h(
      "td",
      {},
      progressBar(p.relations_done, p.relations_total),
      ` ${p.relations_done}/${p.relations_total} relations`,
      p.facts_total ? `, ${p.facts_done}/${p.facts_total} facts` : "",
      p.current_relation && job.status === "running" ? h("div", { className: "muted" }, `now: ${p.current_relation}`) : null
    ),
    h("td", {}, job.circuit_ids.map((id, i) => [i ? ", " : "", h("a", { href: `/ui/circuits/${id}` }, `#${id}`)])),
    h("td", {}, job.error ? h("span", { className: "error" }, job.error) : ""),
    h("td", { className: "muted" }, `queued ${when(job.created_at)}`, job.finished_at ? h("div", {}, `finished ${when(job.finished_at)}`) : null, job.work_seconds ? h("div", {}, `${job.work_seconds.toFixed(1)} s of work`) : null)
  );
}

function field(label, control, wide = false) {
  return h("label", { className: wide ? "wide" : "", for: control.id }, label, control);
}

async function start() {
  const list = h("div", { id: "jobs" }, h("p", { className: "loading" }, "Loading…"));
  const updated = h("span", { id: "updated", className: "muted" });
  const message = h("p", { id: "job-message", role: "status" });
  const [models, relations, methodList] = await Promise.all([allPages("/models"), allPages("/relations"), methods()]);
  const controls = {
    token: h("input", { id: "token", name: "token", type: "password", autocomplete: "off", placeholder: "ATLAS_API_TOKEN" }),
    model: h("input", { id: "model", name: "model", list: "model-names", required: true, placeholder: "smollm2-135m" }),
    relations: h("input", { id: "relations", name: "relations", list: "relation-names", required: true, placeholder: "country_capital_city, country_language" }),
    method: h("select", { id: "method", name: "method" }, methodList.map((m) => h("option", { value: m.name, title: m.summary }, m.name))),
    ig_steps: h("input", { id: "ig_steps", name: "ig_steps", type: "number", min: 1, max: 512, value: 5 }),
    target: h("input", { id: "target_faithfulness", name: "target_faithfulness", type: "number", min: 0.01, max: 1, step: 0.01, value: 0.8 }),
    top_n: h("input", { id: "top_n", name: "top_n", type: "number", min: 1, placeholder: "by faithfulness" }),
    max_facts: h("input", { id: "max_facts", name: "max_facts", type: "number", min: 1, value: 32 }),
    queue: h("select", { id: "queue", name: "queue" }, h("option", { value: "cpu" }, "cpu"), h("option", { value: "gpu" }, "gpu")),
  };
  const form = h(
    "form",
    { className: "job", id: "job-form" },
    field("relations (comma-separated)", controls.relations, true),
    field("model", controls.model),
    field("method", controls.method),
    field("IG steps", controls.ig_steps),
    field("target faithfulness (the smallest circuit reaching it)", controls.target),
    field("or a fixed size (edges)", controls.top_n),
    field("facts at most", controls.max_facts),
    field("queue", controls.queue),
    field("API token", controls.token),
    h("div", { className: "wide" }, h("button", { type: "submit", id: "submit-job" }, "schedule job")),
    h("datalist", { id: "model-names" }, models.items.map((m) => h("option", { value: m.name }))),
    h("datalist", { id: "relation-names" }, relations.items.map((r) => h("option", { value: r.name })))
  );
  main.replaceChildren(h("h1", {}, "Jobs"), h("p", {}, "Extraction jobs, newest first. ", updated), list, h("h2", {}, "Schedule a job"), form, message);

  let timer = null;
  const refresh = async () => {
    clearTimeout(timer);
    let active = false;
    try {
      const page = await api("/jobs?limit=100");
      active = page.items.some((job) => job.status === "queued" || job.status === "running");
      list.replaceChildren(
        page.items.length
          ? h(
              "table",
              { id: "jobs-table" },
              h("thead", {}, h("tr", {}, ["id", "kind", "model", "relations", "status", "progress", "circuits", "error", "time"].map((t) => h("th", {}, t)))),
              h("tbody", {}, page.items.map(jobRow))
            )
          : h("p", { className: "muted", id: "no-jobs" }, "No jobs yet.")
      );
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}${active ? "; refreshing every 2 s" : ""}.`;
    } catch (error) {
      updated.textContent = `Could not refresh: ${error.message}`;
    }
    main.dataset.ready = "1";
    timer = setTimeout(refresh, active ? FAST : SLOW);
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      model: controls.model.value.trim(),
      relations: controls.relations.value.split(/[\s,]+/).filter(Boolean),
      method: controls.method.value,
      ig_steps: Number(controls.ig_steps.value),
      ...(controls.top_n.value ? { top_n: Number(controls.top_n.value) } : { target_faithfulness: Number(controls.target.value) }),
      max_facts: Number(controls.max_facts.value),
      queue: controls.queue.value,
    };
    const headers = { "Content-Type": "application/json" };
    if (controls.token.value) headers.Authorization = `Bearer ${controls.token.value}`;
    message.className = "";
    message.textContent = "Sending…";
    try {
      const answer = await api("/jobs", { method: "POST", headers, body: JSON.stringify(body) });
      message.className = "ok";
      message.replaceChildren(
        answer.job ? `Job #${answer.job.id}: ${answer.message}.` : `${answer.message}: `,
        ...(answer.job ? [] : answer.circuits.map((c, i) => [i ? ", " : "", h("a", { href: `/ui/circuits/${c.id}` }, `#${c.id} ${c.relation}`)]))
      );
      refresh();
    } catch (error) {
      message.className = "error";
      const fields = error instanceof ApiError && error.body && error.body.errors ? error.body.errors : [];
      message.replaceChildren(
        error instanceof ApiError ? `${error.status}: ${error.message}` : error.message,
        fields.length ? h("ul", {}, fields.map((f) => h("li", {}, `${f.field}: ${f.message}`))) : null
      );
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  await refresh();
}

start().catch((error) => showError(main, error));
