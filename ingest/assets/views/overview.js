// Overview: the stats figures and the trends chart, drawn as SVG from `/api/analytics/trends`
// (period and grouping selectable, both kept in the URL).

import { errorPanel, field, h, num, replace, select } from "../ui.js";

const GROUPINGS = { day: "hour", week: "day", month: "day", year: "month" };

export function mount(root, route, { navigate, api }) {
  const params = route.params;
  const period = params.get("period") || "week";
  const groupBy = params.get("group_by") || GROUPINGS[period] || "day";

  const stats = h("div", { id: "stats", class: "figures" }, h("p", { class: "muted" }, "Loading…"));
  const controls = h(
    "form",
    { class: "filters", "aria-label": "Chart settings" },
    field("Period", select("period", [["day", "Last day"], ["week", "Last week"], ["month", "Last 30 days"], ["year", "Last year"]], period)),
    field("Grouped by", select("group_by", [["hour", "Hour"], ["day", "Day"], ["week", "Week"], ["month", "Month"]], groupBy)),
  );
  controls.addEventListener("change", (ev) => {
    const next = new URLSearchParams();
    const p = controls.elements.period.value;
    next.set("period", p);
    // A new period brings its natural grouping; a new grouping is kept as chosen.
    next.set("group_by", ev.target.name === "period" ? GROUPINGS[p] : controls.elements.group_by.value);
    navigate("overview", next);
  });
  controls.addEventListener("submit", (ev) => ev.preventDefault());
  const chart = h("figure", { id: "trends", class: "chart" });
  replace(
    root,
    h("h1", {}, "Overview"),
    h("section", { class: "panel", "aria-labelledby": "stats-title" }, h("h2", { id: "stats-title" }, "Figures"), stats),
    h("section", { class: "panel", "aria-labelledby": "trends-title" }, h("h2", { id: "trends-title" }, "Trends"), controls, chart),
  );

  let lastStats = null;
  let lastTrends = null;
  async function refresh() {
    const [s, t] = await Promise.allSettled([
      api("/api/stats"),
      api(`/api/analytics/trends?period=${encodeURIComponent(period)}&group_by=${encodeURIComponent(groupBy)}`),
    ]);
    if (s.status === "fulfilled") {
      if (JSON.stringify(s.value) !== JSON.stringify(lastStats)) replace(stats, figures(s.value));
      lastStats = s.value;
    } else {
      replace(stats, errorPanel(s.reason, "Could not load the figures"));
      lastStats = null;
    }
    if (t.status === "fulfilled") {
      if (JSON.stringify(t.value) !== JSON.stringify(lastTrends)) replace(chart, trendsChart(t.value));
      lastTrends = t.value;
    } else {
      replace(chart, errorPanel(t.reason, "Could not load the trends"));
      lastTrends = null;
    }
    if (s.status === "rejected") throw s.reason;
    if (t.status === "rejected") throw t.reason;
  }
  return { refresh };
}

function figures(s) {
  const items = [
    ["Error groups", num(s.total_errors), "total_errors"],
    ["Unresolved", num(s.unresolved_errors), "unresolved_errors"],
    ["Resolved", num(s.resolved_errors), "resolved_errors"],
    ["Events today", num(s.errors_today), "errors_today"],
    ["This week", num(s.errors_this_week), "errors_this_week"],
    ["This month", num(s.errors_this_month), "errors_this_month"],
    ["Events per hour (24 h)", num(s.error_rate_24h), "error_rate_24h"],
    ["Resolution rate", `${num(s.resolution_rate)} %`, "resolution_rate"],
    ["Average time to resolve", s.avg_resolution_time || "—", "avg_resolution_time"],
  ];
  return h("dl", {}, items.map(([label, value, key]) => h("div", { class: "figure", dataset: { stat: key } }, h("dt", {}, label), h("dd", {}, value))));
}

const W = 800;
const H = 260;
const PAD = { left: 48, right: 12, top: 12, bottom: 36 };

function label(iso, groupBy) {
  const d = new Date(iso);
  const day = d.toISOString().slice(5, 10);
  if (groupBy === "hour") return `${d.toISOString().slice(11, 13)}:00`;
  if (groupBy === "month") return d.toISOString().slice(0, 7);
  return day;
}

/** Bars for events per bucket, a line for resolutions; every bar carries its figure. */
export function trendsChart(t) {
  const points = t.data_points || [];
  const total = points.reduce((a, p) => a + p.error_count, 0);
  const resolved = points.reduce((a, p) => a + p.resolved_count, 0);
  const max = Math.max(1, ...points.map((p) => Math.max(p.error_count, p.resolved_count)));
  const niceMax = niceCeil(max);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, points.length);
  const y = (v) => PAD.top + plotH - (v / niceMax) * plotH;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => niceMax * f);
  const labelEvery = Math.max(1, Math.ceil(points.length / 10));

  const svg = h(
    "svg",
    {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": "trends-svg-title trends-svg-desc",
      class: "trends-svg",
      dataset: { total: String(total), resolved: String(resolved), points: String(points.length) },
    },
    h("title", { id: "trends-svg-title" }, `Events per ${t.group_by}`),
    h("desc", { id: "trends-svg-desc" }, `${num(total)} events and ${num(resolved)} resolutions from ${new Date(t.from).toISOString().slice(0, 16)} to ${new Date(t.to).toISOString().slice(0, 16)} UTC.`),
    h("g", { class: "grid" }, ticks.map((v) => [
      h("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      h("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, num(v)),
    ])),
    h("g", { class: "bars" }, points.map((p, i) => {
      const barH = (p.error_count / niceMax) * plotH;
      return h(
        "rect",
        {
          x: (PAD.left + i * step + step * 0.15).toFixed(1),
          y: (PAD.top + plotH - barH).toFixed(1),
          width: Math.max(1, step * 0.7).toFixed(1),
          height: barH.toFixed(1),
          dataset: { count: String(p.error_count), timestamp: p.timestamp },
        },
        h("title", {}, `${label(p.timestamp, t.group_by)}: ${num(p.error_count)} events, ${num(p.resolved_count)} resolved, ${num(p.critical_count)} critical`),
      );
    })),
    resolved > 0
      ? h("polyline", {
          class: "resolved-line",
          points: points.map((p, i) => `${(PAD.left + i * step + step / 2).toFixed(1)},${y(p.resolved_count).toFixed(1)}`).join(" "),
        })
      : null,
    h("g", { class: "x-labels" }, points.map((p, i) => (i % labelEvery === 0
      ? h("text", { x: (PAD.left + i * step + step / 2).toFixed(1), y: H - PAD.bottom + 18, "text-anchor": "middle" }, label(p.timestamp, t.group_by))
      : null))),
  );
  return [
    svg,
    h("figcaption", {}, h("span", { class: "key key-events" }, "Events"), " ", h("span", { class: "key key-resolved" }, "Resolutions"), ` · ${num(total)} events in this period`),
    h(
      "details",
      {},
      h("summary", {}, "The figures as a table"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Bucket (UTC)", "Events", "Resolved", "Critical"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, points.map((p) => h("tr", {}, h("td", {}, exactBucket(p.timestamp)), h("td", { class: "num" }, num(p.error_count)), h("td", { class: "num" }, num(p.resolved_count)), h("td", { class: "num" }, num(p.critical_count)))))),
    ),
  ];
}

function exactBucket(iso) {
  return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return Math.max(4, m * p);
  return v;
}
