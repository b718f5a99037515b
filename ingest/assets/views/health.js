// Health: every service's status and response time, the worker's queue depth and lag, uptime and
// this instance's host figures.

import { ago, badge, errorPanel, h, num, replace } from "../ui.js";

export function mount(root, _route, { api }) {
  const services = h("div", { id: "services" }, h("p", { class: "muted" }, "Loading…"));
  const uptime = h("div", { id: "uptime" });
  const host = h("div", { id: "host" });
  replace(
    root,
    h("h1", {}, "Health"),
    h("section", { class: "panel" }, h("h2", {}, "Services"), services),
    h("section", { class: "panel" }, h("h2", {}, "Uptime"), uptime),
    h("section", { class: "panel" }, h("h2", {}, "This ingest instance"), host),
  );

  async function refresh() {
    const [s, u, m, p] = await Promise.allSettled([
      api("/api/monitoring/services"),
      api("/api/monitoring/uptime"),
      api("/api/monitoring/metrics"),
      api("/api/analytics/performance"),
    ]);
    // Folded details the user opened stay open across refreshes.
    const open = new Set([...services.querySelectorAll("details[open] > summary")].map((x) => x.closest("tr")?.dataset.component + x.textContent.split(":")[0]));
    replace(services, s.status === "fulfilled" ? serviceTable(s.value) : errorPanel(s.reason, "Could not load the services"));
    for (const x of services.querySelectorAll("details > summary")) {
      if (open.has(x.closest("tr")?.dataset.component + x.textContent.split(":")[0])) x.parentElement.open = true;
    }
    replace(uptime, u.status === "fulfilled" ? uptimeFigures(u.value) : errorPanel(u.reason, "Could not load the uptime"));
    replace(host, m.status === "fulfilled" ? hostFigures(m.value, p.status === "fulfilled" ? p.value : null) : errorPanel(m.reason, "Could not load the metrics"));
    const failed = [s, u, m, p].find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }
  return { refresh };
}

function serviceTable(d) {
  return [
    h("p", {}, "Overall: ", badge(d.overall_health)),
    h("table", {},
      h("thead", {}, h("tr", {}, ["Service", "Status", "Response time", "Uptime (24 h)", "Details", "Checked"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, d.services.map((s) => h("tr", { dataset: { component: s.component } },
        h("th", { scope: "row" }, s.name),
        h("td", {}, badge(s.status)),
        h("td", { class: "num" }, `${num(s.response_time_ms)} ms`),
        h("td", { class: "num" }, s.uptime_percent === null ? "—" : `${num(s.uptime_percent)} %`),
        h("td", { class: "small" }, s.error ? h("span", { class: "bad" }, s.error) : null, details(s.details)),
        h("td", {}, ago(s.last_checked)),
      ))),
    ),
  ];
}

/** Queue depth, lag and the like, as "name: value" pairs. */
function details(d) {
  if (!d || typeof d !== "object") return null;
  return h("ul", { class: "plain" }, Object.entries(d).map(([k, v]) => {
    const label = k.replaceAll("_", " ");
    if (typeof v !== "object" || v === null) return h("li", {}, `${label}: `, String(v));
    // Nested figures (e.g. one entry per worker instance) fold away, readable when opened.
    const summary = Array.isArray(v) ? `${label}: ${v.length}` : label;
    return h("li", {}, h("details", {}, h("summary", {}, summary), h("pre", { class: "json" }, JSON.stringify(v, null, 2))));
  }));
}

function uptimeFigures(u) {
  const pct = (v) => (v === null || v === undefined ? "—" : `${num(v)} %`);
  return h("dl", { class: "figures" }, [
    ["Up for", `${num(u.current_uptime_hours)} h`],
    ["Last 24 h", pct(u.uptime_percent_24h)],
    ["Last 7 days", pct(u.uptime_percent_7d)],
    ["Last 30 days", pct(u.uptime_percent_30d)],
    ["Incidents (30 days)", num(u.incidents_count)],
    ["Last downtime", u.last_downtime ? ago(u.last_downtime) : "none recorded"],
  ].map(([k, v]) => h("div", { class: "figure" }, h("dt", {}, k), h("dd", {}, v))));
}

function hostFigures(m, p) {
  const pct = (v) => (v === null || v === undefined ? "—" : `${num(v)} %`);
  const rows = [
    ["CPU", pct(m.cpu_usage_percent)],
    ["Memory", pct(m.memory_usage_percent)],
    ["Disk", pct(m.disk_usage_percent)],
    ["Requests per minute", num(m.requests_per_minute)],
    ["Open connections", num(m.active_connections)],
  ];
  if (p) {
    rows.push(["Average latency (1 h)", `${num(p.avg_response_time)} ms`], ["p95 latency", `${num(p.p95_response_time_ms)} ms`], ["5xx share", pct(p.error_rate_percent)], ["Performance score", `${num(p.performance_score)} / 10`]);
  }
  return h("dl", { class: "figures" }, rows.map(([k, v]) => h("div", { class: "figure" }, h("dt", {}, k), h("dd", {}, v))));
}
