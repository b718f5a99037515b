// Errors: the grouped errors with filters, sorting and paging. Every filter lives in the URL
// (#/errors?level=error&page=2), so the view can be shared and the back button works.

import { ago, badge, errorPanel, field, h, num, relative, replace, select } from "../ui.js";

const DEFAULT_PAGE_SIZE = 25;
const FILTERS = ["level", "source", "environment", "resolved", "q", "sort", "order"];

export function mount(root, route, { navigate, api }) {
  const params = route.params;
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  // `limit` in the URL (1-100) changes the page size; the form keeps it.
  const PAGE_SIZE = Math.min(100, Math.max(1, parseInt(params.get("limit") || "", 10) || DEFAULT_PAGE_SIZE));

  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter errors" },
    field("Search", h("input", { type: "search", name: "q", value: params.get("q") || "", placeholder: "Text in the message" })),
    field("Level", select("level", [["", "Any"], ["error", "Error"], ["warning", "Warning"], ["info", "Info"], ["debug", "Debug"]], params.get("level"))),
    field("Status", select("resolved", [["", "Any"], ["false", "Unresolved"], ["true", "Resolved"]], params.get("resolved"))),
    field("Source", h("input", { type: "text", name: "source", value: params.get("source") || "", size: 12 })),
    field("Environment", h("input", { type: "text", name: "environment", value: params.get("environment") || "", size: 12 })),
    field("Sort by", select("sort", [["", "Last seen"], ["first_seen", "First seen"], ["count", "Count"]], params.get("sort"))),
    field("Order", select("order", [["", "Newest / most first"], ["asc", "Oldest / fewest first"]], params.get("order"))),
    h("button", { type: "submit" }, "Apply"),
    h("a", { href: "#/errors", class: "button-link" }, "Clear"),
  );
  const apply = (ev) => {
    ev?.preventDefault();
    const next = new URLSearchParams();
    const data = new FormData(form);
    for (const name of FILTERS) {
      const v = String(data.get(name) || "").trim();
      if (v) next.set(name, v);
    }
    if (params.get("limit")) next.set("limit", params.get("limit"));
    navigate("errors", next);
  };
  form.addEventListener("submit", apply);
  for (const s of form.querySelectorAll("select")) s.addEventListener("change", apply);

  const summary = h("p", { id: "errors-summary", class: "muted", "aria-live": "polite" }, "Loading…");
  const results = h("div", { id: "errors-results" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  replace(root, h("h1", {}, "Errors"), form, summary, results, pager);

  let last = null;
  async function refresh() {
    const q = new URLSearchParams();
    for (const name of FILTERS) if (params.get(name)) q.set(name, params.get(name));
    q.set("limit", String(PAGE_SIZE));
    q.set("offset", String((page - 1) * PAGE_SIZE));
    let data;
    try {
      data = await api(`/api/errors?${q}`);
    } catch (e) {
      replace(results, errorPanel(e, "Could not load the errors"), last ? table(last) : null);
      summary.textContent = "";
      throw e;
    }
    // The sparklines are decoration: without them the list still shows.
    data.sparklines = null;
    if (data.errors.length) {
      try {
        const ids = data.errors.map((e) => e.id).join(",");
        data.sparklines = (await api(`/api/errors/sparklines?ids=${ids}`)).sparklines;
      } catch {
        data.sparklines = null;
      }
    }
    const json = JSON.stringify(data);
    if (json === JSON.stringify(last) && results.querySelector("table")) {
      refreshTimes(results);
      return;
    }
    last = data;
    const from = data.total === 0 ? 0 : data.offset + 1;
    const to = data.offset + data.errors.length;
    summary.textContent = data.total === 0 ? "" : `Showing ${from}–${to} of ${num(data.total)} error groups`;
    replace(results, data.total === 0 ? empty(params) : table(data));
    drawPager(data);
  }

  function drawPager(data) {
    const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
    const link = (p, text, rel) => {
      const next = new URLSearchParams(params);
      if (p === 1) next.delete("page");
      else next.set("page", String(p));
      return h("a", { href: `#/errors${next.toString() ? `?${next}` : ""}`, rel }, text);
    };
    replace(
      pager,
      page > 1 ? link(page - 1, "← Previous", "prev") : h("span", { class: "muted" }, "← Previous"),
      h("span", { "aria-current": "page" }, `Page ${page} of ${pages}`),
      page < pages ? link(page + 1, "Next →", "next") : h("span", { class: "muted" }, "Next →"),
    );
  }

  return { refresh };
}

function empty(params) {
  const filtered = FILTERS.some((f) => params.get(f));
  return h(
    "div",
    { class: "empty" },
    h("p", {}, filtered ? "No error matches these filters." : "No errors yet."),
    filtered ? null : h("p", { class: "muted" }, "Send one with: curl -X POST -H 'X-API-Key: …' -H 'Content-Type: application/json' -d '{\"message\":\"boom\",\"level\":\"error\"}' " + location.origin + "/api/errors"),
  );
}

function table(data) {
  return h(
    "table",
    { class: "errors" },
    h("caption", { class: "visually-hidden" }, "Error groups"),
    h(
      "thead",
      {},
      h("tr", {}, ["Level", "Message", "Events", "Last 24 h", "First seen", "Last seen", "Status"].map((t) => h("th", { scope: "col" }, t))),
    ),
    h(
      "tbody",
      {},
      data.errors.map((e) =>
        h(
          "tr",
          { dataset: { id: e.id } },
          h("td", {}, badge(e.level)),
          h(
            "td",
            { class: "message" },
            h("a", { href: `#/errors/${e.id}` }, e.message),
            h("div", { class: "muted small" }, [e.source, e.environment, e.release].filter(Boolean).join(" · ")),
          ),
          h("td", { class: "count num" }, num(e.count)),
          h("td", { class: "spark" }, sparkline(data.sparklines && data.sparklines[e.id])),
          h("td", {}, ago(e.first_seen)),
          h("td", {}, ago(e.last_seen)),
          h("td", { class: "status" }, e.resolved ? badge("resolved") : e.regressed ? badge("regressed") : badge("unresolved")),
        ),
      ),
    ),
  );
}

/** Keeps "3 min ago" honest when the data did not change. */
function refreshTimes(el) {
  for (const t of el.querySelectorAll("time[datetime]")) {
    t.textContent = relative(new Date(t.getAttribute("datetime")));
  }
}

/** 24 hourly bars, oldest first, scaled to the busiest hour. */
function sparkline(counts) {
  if (!Array.isArray(counts)) return "—";
  const total = counts.reduce((a, b) => a + b, 0);
  const peak = Math.max(...counts);
  const w = 4;
  const height = 20;
  return h(
    "svg",
    {
      class: "sparkline",
      viewBox: `0 0 ${counts.length * w} ${height}`,
      width: counts.length * w,
      height,
      role: "img",
      "aria-label": `${total} events in the last 24 hours, at most ${peak} in an hour`,
      dataset: { total: String(total) },
    },
    h("line", { x1: 0, x2: counts.length * w, y1: height - 0.5, y2: height - 0.5 }),
    counts.map((n, i) => {
      const bh = peak ? Math.max(n ? 2 : 0, (n / peak) * (height - 2)) : 0;
      return h("rect", { x: i * w + 0.5, y: height - bh, width: w - 1, height: bh, dataset: { count: String(n) } });
    }),
  );
}
