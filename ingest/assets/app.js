// The dashboard's shell: the key prompt, hash routing (the view's state lives in the URL, so a
// link can be shared), the connection status and the auto-refresh loop.

import { api, clearKey, getKey, onOutcome, setKey } from "./api.js";
import { errorPanel, h, replace } from "./ui.js";
import * as errorsView from "./views/errors.js";
import * as detailView from "./views/detail.js";
import * as overviewView from "./views/overview.js";
import * as alertsView from "./views/alerts.js";
import * as healthView from "./views/health.js";
import * as settingsView from "./views/settings.js";

const REFRESH_MS = 5000;

const main = document.getElementById("main");
const connection = document.getElementById("connection");
const banner = document.getElementById("banner");
const autoButton = document.getElementById("auto-refresh");
const changeKeyButton = document.getElementById("change-key");

/** The current route: { name, id, params (URLSearchParams) } from "#/errors/<id>?a=b". */
export function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean);
  return { name: parts[0] || "errors", id: parts[1] || null, params: new URLSearchParams(query) };
}

/** Changes the URL to `name` with `params`; the hashchange listener renders it. */
export function navigate(name, params = new URLSearchParams(), { replaceState = false } = {}) {
  const query = params.toString();
  const hash = `#/${name}${query ? `?${query}` : ""}`;
  if (hash === location.hash) return;
  if (replaceState) {
    history.replaceState(null, "", hash);
    render();
  } else {
    location.hash = hash;
  }
}

let view = null; // { refresh(), destroy?() } of the mounted view

function pickView(route) {
  if (route.name === "errors" && route.id) return detailView;
  return { errors: errorsView, overview: overviewView, alerts: alertsView, health: healthView, settings: settingsView }[route.name];
}

let lastRouteName = null;

async function render() {
  view?.destroy?.();
  view = null;
  // Keyboard users keep their place: a filter change re-renders the same view with the focus on
  // the same control; a new view puts the focus on its content.
  const active = document.activeElement;
  const keepFocus = main.contains(active) && active.name ? active.name : null;
  if (!getKey()) {
    showKeyPrompt();
    return;
  }
  changeKeyButton.hidden = false;
  const route = currentRoute();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === route.name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const module = pickView(route);
  if (!module) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, "There is no such page. ", h("a", { href: "#/errors" }, "Go to the errors.")));
    return;
  }
  main.replaceChildren();
  const mounted = module.mount(main, route, { navigate, api });
  view = mounted;
  const sameView = lastRouteName === `${route.name}/${route.id ? "detail" : ""}`;
  lastRouteName = `${route.name}/${route.id ? "detail" : ""}`;
  const again = sameView && keepFocus ? main.querySelector(`[name="${CSS.escape(keepFocus)}"]`) : null;
  if (again) again.focus();
  else if (!sameView) main.focus({ preventScroll: true });
  try {
    await mounted.refresh();
  } catch {
    // The view shows the error (message and request id); the header shows the connection.
  }
}

function showKeyPrompt(message) {
  changeKeyButton.hidden = true;
  setConnection("none", "Not connected");
  const input = h("input", {
    id: "api-key",
    name: "key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "key-help",
  });
  const out = h("div", { id: "key-result", "aria-live": "polite" });
  if (message) replace(out, message);
  const submit = h("button", { type: "submit" }, "Open the dashboard");
  const form = h(
    "form",
    {
      class: "key-form",
      "aria-labelledby": "key-title",
      async onsubmit(ev) {
        ev.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        submit.disabled = true;
        replace(out, h("p", {}, "Checking the key…"));
        try {
          await api("/api/errors?limit=1", { key });
          setKey(key);
          render();
        } catch (e) {
          replace(out, errorPanel(e, e.kind === "unauthorized" ? "The key was refused" : "The key could not be checked"));
          submit.disabled = false;
          input.focus();
        }
      },
    },
    h("h1", { id: "key-title" }, "Sign in with an API key"),
    h(
      "p",
      { id: "key-help" },
      "Enter a Faultline API key with read permission (write to resolve or delete). It stays in this browser's local storage and is sent only to this server.",
    ),
    h("label", { for: "api-key" }, "API key"),
    input,
    submit,
    out,
  );
  replace(main, form);
  input.focus();
}

function setConnection(state, text) {
  connection.dataset.state = state;
  connection.textContent = text;
}

onOutcome(({ ok, error }) => {
  if (ok) {
    setConnection("ok", `Connected · updated ${new Date().toLocaleTimeString("en-GB")}`);
    banner.hidden = true;
    return;
  }
  if (error.kind === "unreachable") {
    setConnection("down", "API unreachable");
    showBanner(`The API is unreachable; retrying every ${REFRESH_MS / 1000} s. ${error.message}`);
  } else if (error.kind === "unauthorized" && getKey()) {
    setConnection("refused", "Key refused");
    showBanner(`The API refused the key: ${error.message}`, true);
  } else if (error.kind === "throttled") {
    setConnection("down", "Rate limited");
  }
});

function showBanner(text, offerKeyChange = false) {
  replace(
    banner,
    h("span", {}, text),
    offerKeyChange ? h("button", { type: "button", onclick: forgetKey }, "Enter another key") : null,
  );
  banner.hidden = false;
}

function forgetKey() {
  clearKey();
  banner.hidden = true;
  render();
}

changeKeyButton.addEventListener("click", forgetKey);

let auto = localStorage.getItem("faultline.autoRefresh") !== "off";
function showAuto() {
  autoButton.setAttribute("aria-pressed", String(auto));
  autoButton.textContent = auto ? "Auto-refresh: on" : "Auto-refresh: off";
}
autoButton.addEventListener("click", () => {
  auto = !auto;
  localStorage.setItem("faultline.autoRefresh", auto ? "on" : "off");
  showAuto();
});
showAuto();

let refreshing = false;
setInterval(async () => {
  if (!auto || !view || refreshing || document.hidden || !getKey()) return;
  refreshing = true;
  try {
    await view.refresh();
  } catch {
    // Shown by the view and the connection status.
  } finally {
    refreshing = false;
  }
}, REFRESH_MS);

window.addEventListener("hashchange", render);
render();
