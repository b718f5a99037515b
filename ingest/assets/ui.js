// Small DOM helpers shared by the views: element building, time and number formatting, and the
// error panel that shows an API error's message and request id.

/** h("a", { href: "#/x", class: "y" }, "text", child) — attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = tag === "svg" || SVG_TAGS.has(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(["g", "rect", "line", "path", "text", "title", "polyline", "circle", "desc"]);

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

const numberFormat = new Intl.NumberFormat("en");
export function num(n) {
  return n === null || n === undefined ? "—" : numberFormat.format(n);
}

/** "3 min ago" in a <time> whose title is the exact UTC time. */
export function ago(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  return h("time", { datetime: t.toISOString(), title: t.toISOString().replace("T", " ").slice(0, 19) + " UTC" }, relative(t));
}

export function relative(t) {
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function exact(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—";
}

/** A panel saying what failed, with the server's code and request id when there is one. */
export function errorPanel(error, what = "Loading failed") {
  return h(
    "div",
    { class: "error-panel", role: "alert", dataset: { kind: error.kind || "client" } },
    h("p", {}, h("strong", {}, `${what}: `), error.message || String(error)),
    error.code || error.status
      ? h("p", { class: "muted" }, [
          error.status ? `HTTP ${error.status}` : null,
          error.code ? ` · code ${error.code}` : null,
        ])
      : null,
    error.requestId ? h("p", { class: "muted" }, "Request id: ", h("code", { class: "request-id" }, error.requestId)) : null,
    error.details ? h("pre", { class: "details" }, JSON.stringify(error.details, null, 2)) : null,
  );
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

let fieldSeq = 0;
/** A labelled control; the label points at it with `for`, so its accessible name is the label alone. */
export function field(label, control) {
  if (!control.id) control.id = `field-${++fieldSeq}`;
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}

export function select(name, options, value) {
  return h(
    "select",
    { name, id: `f-${name}` },
    options.map(([v, text]) => h("option", { value: v, selected: v === (value || "") }, text)),
  );
}

/** Runs `fn` (async) with the button disabled; shows failures in `out`. */
export async function busy(button, fn, out) {
  button.disabled = true;
  try {
    await fn();
  } catch (e) {
    if (out) replace(out, errorPanel(e, "That did not work"));
    else throw e;
  } finally {
    button.disabled = false;
  }
}
