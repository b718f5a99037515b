// Alerts: rules (create, edit, enable/disable, delete; the condition as the server words it),
// incidents (status and severity changes) and the delivery log, failures first to the eye.

import { ago, badge, busy, errorPanel, field, h, num, replace, select } from "../ui.js";

const SEVERITIES = ["low", "medium", "high", "critical"];
const STATUSES = ["open", "investigating", "resolved"];
const CHANNELS = ["email", "slack", "webhook"];

export function mount(root, _route, { api }) {
  const rules = h("div", { id: "rules" }, h("p", { class: "muted" }, "Loading…"));
  const incidents = h("div", { id: "incidents" });
  const deliveries = h("div", { id: "deliveries" });
  const ruleOut = h("div", { "aria-live": "polite" });
  const incidentOut = h("div", { "aria-live": "polite" });
  let editing = null; // the rule being edited, or null for a new one

  const form = h(
    "form",
    { class: "filters rule-form", id: "rule-form", "aria-label": "Alert rule" },
    field("Name", h("input", { name: "name", required: true, maxlength: 200 })),
    field("Kind", select("kind", [["threshold", "More than N events in a window"], ["new_error", "A new error group"], ["regression", "A resolved error comes back"]], "threshold")),
    field("Threshold", h("input", { name: "threshold", type: "number", min: 0, value: 10, size: 6 })),
    field("Window", h("input", { name: "time_window", value: "5m", size: 5, title: "e.g. 30s, 5m, 1h" })),
    field("Level", select("level", [["", "Any"], ["error", "Error"], ["warning", "Warning"], ["info", "Info"], ["debug", "Debug"]], "")),
    field("Source", h("input", { name: "source", size: 10 })),
    field("Environment", h("input", { name: "environment", size: 10 })),
    field("Cooldown", h("input", { name: "cooldown", value: "10m", size: 5 })),
    field("Severity", select("severity", SEVERITIES.map((s) => [s, s]), "high")),
    h("fieldset", { class: "inline" }, h("legend", {}, "Notify"),
      CHANNELS.map((c) => h("label", {}, h("input", { type: "checkbox", name: "notifications", value: c }), ` ${c}`))),
    h("label", {}, h("input", { type: "checkbox", name: "enabled", checked: true }), " Enabled"),
    h("button", { type: "submit", id: "rule-submit" }, "Create rule"),
    h("button", { type: "button", id: "rule-cancel", hidden: true, onclick: () => resetForm() }, "Cancel editing"),
  );

  function resetForm() {
    editing = null;
    form.reset();
    form.querySelector("#rule-submit").textContent = "Create rule";
    form.querySelector("#rule-cancel").hidden = true;
  }

  function bodyFromForm() {
    const d = new FormData(form);
    const text = (n) => String(d.get(n) || "").trim();
    const filters = {};
    for (const k of ["level", "source", "environment"]) if (text(k)) filters[k] = text(k);
    const body = {
      name: text("name"),
      kind: text("kind"),
      cooldown: text("cooldown") || "10m",
      severity: text("severity"),
      filters,
      notifications: d.getAll("notifications").map(String),
      enabled: d.get("enabled") !== null,
    };
    if (body.kind === "threshold") {
      body.threshold = Number(text("threshold"));
      body.time_window = text("time_window");
    }
    return body;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await busy(form.querySelector("#rule-submit"), async () => {
      const body = bodyFromForm();
      if (editing) await api(`/api/alerts/rules/${encodeURIComponent(editing.id)}`, { method: "PUT", body });
      else await api("/api/alerts/rules", { method: "POST", body });
      replace(ruleOut, h("p", { class: "ok" }, editing ? `Saved "${body.name}".` : `Created "${body.name}".`));
      resetForm();
      await loadRules();
    }, ruleOut);
  });

  function edit(rule) {
    editing = rule;
    const el = form.elements;
    el.name.value = rule.name;
    el.kind.value = rule.kind;
    el.threshold.value = rule.threshold;
    el.time_window.value = rule.time_window || "";
    el.level.value = rule.filters?.level || "";
    el.source.value = rule.filters?.source || "";
    el.environment.value = rule.filters?.environment || "";
    el.cooldown.value = rule.cooldown || "";
    el.severity.value = rule.severity;
    for (const c of form.querySelectorAll("input[name=notifications]")) c.checked = (rule.notifications || []).includes(c.value);
    el.enabled.checked = rule.enabled;
    form.querySelector("#rule-submit").textContent = "Save rule";
    form.querySelector("#rule-cancel").hidden = false;
    el.name.focus();
  }

  /** The PUT body that keeps a rule as it is, but for `changes`. */
  function bodyOf(rule, changes) {
    const filters = {};
    for (const [k, v] of Object.entries(rule.filters || {})) if (v) filters[k] = v;
    const body = { name: rule.name, kind: rule.kind, cooldown: rule.cooldown, severity: rule.severity, filters, notifications: rule.notifications || [], enabled: rule.enabled, ...changes };
    if (rule.kind === "threshold") {
      body.threshold = rule.threshold;
      body.time_window = rule.time_window;
    }
    return body;
  }

  replace(
    root,
    h("h1", {}, "Alerts"),
    h("section", { class: "panel", "aria-labelledby": "rules-title" }, h("h2", { id: "rules-title" }, "Rules"), form, ruleOut, rules),
    h("section", { class: "panel", "aria-labelledby": "incidents-title" }, h("h2", { id: "incidents-title" }, "Incidents"), incidentOut, incidents),
    h("section", { class: "panel", "aria-labelledby": "deliveries-title" }, h("h2", { id: "deliveries-title" }, "Delivery log"), deliveries),
  );

  let lastRules = null;
  async function loadRules(force = true) {
    const d = await api("/api/alerts/rules");
    if (!force && JSON.stringify(d) === JSON.stringify(lastRules)) return;
    lastRules = d;
    if (!d.rules.length) {
      replace(rules, h("p", { class: "muted" }, "No rules yet."));
      return;
    }
    replace(rules, h("table", { class: "rules" },
      h("thead", {}, h("tr", {}, ["Rule", "Condition", "Severity", "Notifies", "Enabled", "Last triggered", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, d.rules.map((r) => {
        const toggle = h("input", {
          type: "checkbox",
          checked: r.enabled,
          "aria-label": `Rule ${r.name} enabled`,
          async onchange(ev) {
            const box = ev.currentTarget;
            await busy(box, async () => {
              await api(`/api/alerts/rules/${encodeURIComponent(r.id)}`, { method: "PUT", body: bodyOf(r, { enabled: box.checked }) });
              replace(ruleOut, h("p", { class: "ok" }, `${box.checked ? "Enabled" : "Disabled"} "${r.name}".`));
              await loadRules();
            }, ruleOut);
          },
        });
        const actions = h("td", { class: "row-actions" });
        const del = h("button", { type: "button", class: "danger", "aria-label": `Delete rule ${r.name}` }, "Delete…");
        const editButton = h("button", { type: "button", "aria-label": `Edit rule ${r.name}`, onclick: () => edit(r) }, "Edit");
        del.addEventListener("click", () => {
          const yes = h("button", {
            type: "button",
            class: "danger",
            async onclick() {
              await busy(yes, async () => {
                await api(`/api/alerts/rules/${encodeURIComponent(r.id)}`, { method: "DELETE" });
                replace(ruleOut, h("p", { class: "ok" }, `Deleted "${r.name}".`));
                await loadRules();
              }, ruleOut);
            },
          }, "Delete for good");
          replace(actions, yes, " ", h("button", { type: "button", onclick: () => replace(actions, editButton, " ", del) }, "Cancel"));
          yes.focus();
        });
        replace(actions, editButton, " ", del);
        return h("tr", { dataset: { id: r.id } },
          h("th", { scope: "row" }, r.name),
          h("td", { class: "condition" }, r.condition, r.cooldown ? h("div", { class: "muted small" }, `cooldown ${r.cooldown}`) : null),
          h("td", {}, badge(r.severity)),
          h("td", {}, (r.notifications || []).join(", ") || "—"),
          h("td", {}, toggle),
          h("td", {}, r.last_triggered ? ago(r.last_triggered) : "never"),
          actions);
      }))));
  }

  let lastIncidents = null;
  async function loadIncidents(force = true) {
    const d = await api("/api/alerts/incidents?limit=50");
    if (!force && JSON.stringify(d) === JSON.stringify(lastIncidents)) return;
    lastIncidents = d;
    if (!d.incidents.length) {
      replace(incidents, h("p", { class: "muted" }, "No incidents."));
      return;
    }
    const change = (i, name) => {
      const s = select(name, (name === "status" ? STATUSES : SEVERITIES).map((v) => [v, v]), i[name]);
      s.removeAttribute("id");
      s.setAttribute("aria-label", `${name} of ${i.title}`);
      s.addEventListener("change", async () => {
        await busy(s, async () => {
          await api(`/api/alerts/incidents/${encodeURIComponent(i.id)}`, { method: "PUT", body: { [name]: s.value } });
          replace(incidentOut, h("p", { class: "ok" }, `"${i.title}": ${name} is now ${s.value}.`));
          await loadIncidents();
        }, incidentOut);
      });
      return s;
    };
    replace(incidents, h("table", {},
      h("thead", {}, h("tr", {}, ["Incident", "Severity", "Status", "Triggers", "Opened", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, d.incidents.map((i) => h("tr", { dataset: { id: i.id } },
        h("th", { scope: "row" }, i.title, i.description ? h("div", { class: "muted small" }, i.description) : null),
        h("td", {}, change(i, "severity")),
        h("td", {}, change(i, "status")),
        h("td", { class: "num" }, num(i.trigger_count)),
        h("td", {}, ago(i.created_at)),
        h("td", {}, ago(i.updated_at)),
      )))),
      d.total > d.incidents.length ? h("p", { class: "muted" }, `Showing the latest ${d.incidents.length} of ${num(d.total)}.`) : null);
  }

  async function loadDeliveries() {
    const d = await api("/api/alerts/deliveries?limit=50");
    const list = d.deliveries || d.notifications || [];
    if (!list.length) {
      replace(deliveries, h("p", { class: "muted" }, "Nothing sent yet."));
      return;
    }
    replace(deliveries, h("table", {},
      h("thead", {}, h("tr", {}, ["Queued", "Channel", "Status", "Attempts", "Last error", "Delivered"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.map((n) => h("tr", { class: n.status === "failed" ? "failed" : null },
        h("td", {}, ago(n.created_at)),
        h("td", {}, n.channel),
        h("td", {}, badge(n.status, n.status === "failed" ? "error" : n.status === "delivered" ? "resolved" : "warning")),
        h("td", { class: "num" }, num(n.attempt_count)),
        h("td", { class: "small" }, n.last_error ? h("span", { class: "bad" }, n.last_error) : "—", n.next_attempt_at ? h("div", { class: "muted" }, "next try ", ago(n.next_attempt_at)) : null),
        h("td", {}, n.delivered_at ? ago(n.delivered_at) : "—"),
      )))));
  }

  let first = true;
  async function refresh() {
    const results = await Promise.allSettled([loadRules(first), loadIncidents(first), loadDeliveries()]);
    first = false;
    const targets = [rules, incidents, deliveries];
    const titles = ["the rules", "the incidents", "the delivery log"];
    results.forEach((r, i) => {
      if (r.status === "rejected") replace(targets[i], errorPanel(r.reason, `Could not load ${titles[i]}`));
    });
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }
  return { refresh };
}
