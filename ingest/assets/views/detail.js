// Error detail: the group's message, stack trace (in-app frames set apart from library ones),
// context, why its events were grouped, its occurrences, and resolve / reopen / delete.

import { ago, badge, busy, errorPanel, exact, h, num, replace } from "../ui.js";

const EVENTS_PAGE = 20;

/** Frames from dependencies and the runtime, shown dimmed; everything else is the app's own. */
const LIBRARY_FRAME =
  /node_modules|site-packages|dist-packages|\/usr\/lib|\.cargo\/registry|\/rustc\/|<frozen |internal\/|node:|\/lib\/python\d|java\.|sun\.|jdk\./;

export function mount(root, route, { navigate, api }) {
  const id = route.id;
  const head = h("div", { class: "detail-head" });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
  const actionOut = h("div", { "aria-live": "polite" });
  const body = h("div", { id: "detail-body" });
  replace(root, h("p", {}, h("a", { href: "#/errors" }, "← All errors")), head, actions, actionOut, body);

  let last = null;
  let extraEvents = [];

  async function refresh() {
    let data;
    try {
      data = await api(`/api/errors/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404) {
        replace(head, h("h1", {}, "Error not found"));
        replace(body, h("p", {}, "This error group does not exist (any more). ", h("a", { href: "#/errors" }, "Back to the list.")));
        replace(actions);
        return;
      }
      replace(actionOut, errorPanel(e, "Could not load the error"));
      throw e;
    }
    if (JSON.stringify(data) === JSON.stringify(last)) return;
    const statusChanged = !last || last.resolved !== data.resolved;
    last = data;
    drawHead(data);
    if (statusChanged) drawActions(data);
    drawBody(data);
  }

  function drawHead(e) {
    replace(
      head,
      h("h1", { class: "error-message" }, e.message),
      h(
        "p",
        { class: "meta" },
        badge(e.level),
        " ",
        h("span", { id: "detail-status" }, e.resolved ? badge("resolved") : e.regressed ? badge("regressed") : badge("unresolved")),
        " ",
        h("span", { class: "count" }, `${num(e.count)} events`),
        " · first seen ", ago(e.first_seen),
        " · last seen ", ago(e.last_seen),
        e.resolved_at ? [" · resolved ", ago(e.resolved_at)] : null,
      ),
    );
  }

  function drawActions(e) {
    const setStatus = (verb) => {
      const b = h("button", {
        type: "button",
        id: `${verb}-button`,
        async onclick() {
          await busy(b, async () => {
            await api(`/api/errors/${encodeURIComponent(id)}/${verb}`, { method: "PUT" });
            replace(actionOut, h("p", { class: "ok" }, verb === "resolve" ? "Marked as resolved." : "Reopened."));
            last = null;
            await refresh();
            document.getElementById(verb === "resolve" ? "reopen-button" : "resolve-button")?.focus();
          }, actionOut);
        },
      }, verb === "resolve" ? "Resolve" : "Reopen");
      return b;
    };
    const del = h("button", { type: "button", class: "danger", id: "delete-button" }, "Delete…");
    del.addEventListener("click", () => {
      const confirmButton = h("button", {
        type: "button",
        class: "danger",
        id: "confirm-delete",
        async onclick() {
          await busy(confirmButton, async () => {
            await api(`/api/errors/${encodeURIComponent(id)}`, { method: "DELETE" });
            navigate("errors");
          }, actionOut);
        },
      }, "Delete this group and its events");
      const cancel = h("button", { type: "button", onclick: () => { replace(actionOut); del.focus(); } }, "Cancel");
      replace(actionOut, h("p", { class: "confirm" }, "Delete for good? ", confirmButton, " ", cancel));
      confirmButton.focus();
    });
    replace(actions, e.resolved ? setStatus("reopen") : setStatus("resolve"), del);
  }

  function drawBody(e) {
    const openEvents = new Set([...body.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
    replace(
      body,
      section("Details", facts([
        ["Source", e.source], ["Environment", e.environment], ["Release", e.release], ["URL", e.url],
        ["User agent", e.user_agent], ["IP address", e.ip_address], ["First seen", exact(e.first_seen)],
        ["Last seen", exact(e.last_seen)], ["Fingerprint", e.fingerprint && h("code", {}, e.fingerprint)],
      ])),
      section("Stack trace", e.stack_trace ? stack(e.stack_trace) : h("p", { class: "muted" }, "No stack trace was sent.")),
      section("Context", e.context && Object.keys(e.context).length ? h("pre", { class: "json" }, JSON.stringify(e.context, null, 2)) : h("p", { class: "muted" }, "No context was sent.")),
      section("Why these events were grouped", grouping(e.grouping || {})),
      section(`Occurrences (${num(e.events_stored)} stored)`, occurrences(e.recent_events.concat(extraEvents), e.events_stored, openEvents)),
    );
  }

  function occurrences(events, stored, openEvents) {
    const list = h("ol", { class: "occurrences" }, events.map((ev) => {
      const d = h(
        "details",
        { dataset: { key: ev.id }, open: openEvents.has(ev.id) },
        h("summary", {}, ago(ev.timestamp), " · ", badge(ev.level), " ", [ev.environment, ev.release, ev.url].filter(Boolean).join(" · ") || ev.message),
        facts([["Received", exact(ev.timestamp)], ["Message", ev.message], ["Source", ev.source], ["User agent", ev.user_agent], ["IP address", ev.ip_address]]),
        ev.context && Object.keys(ev.context).length ? [h("h4", {}, "Context"), h("pre", { class: "json" }, JSON.stringify(ev.context, null, 2))] : null,
        ev.extra && Object.keys(ev.extra).length ? [h("h4", {}, "Extra"), h("pre", { class: "json" }, JSON.stringify(ev.extra, null, 2))] : null,
        ev.stack_trace ? [h("h4", {}, "Stack trace"), stack(ev.stack_trace)] : null,
      );
      return h("li", {}, d);
    }));
    const more = events.length < stored
      ? h("button", {
          type: "button",
          async onclick(ev) {
            await busy(ev.currentTarget, async () => {
              const page = await api(`/api/errors/${encodeURIComponent(id)}/events?limit=${EVENTS_PAGE}&offset=${events.length}`);
              extraEvents = extraEvents.concat(page.events);
              drawBody(last);
            }, actionOut);
          },
        }, `Show more (${num(stored - events.length)} older)`)
      : null;
    return [events.length ? list : h("p", { class: "muted" }, "No stored occurrences."), more];
  }

  return { refresh };
}

function section(title, ...content) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...content);
}

function facts(rows) {
  return h("dl", { class: "facts" }, rows.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function stack(text) {
  const lines = String(text).split("\n");
  return h(
    "ol",
    { class: "stack", "aria-label": "Stack frames; library frames are dimmed" },
    lines.map((line) => {
      const frameLike = /^\s*(at |File "|\d+:|#\d+|\S+\.\w+:\d+)/.test(line);
      const library = frameLike && LIBRARY_FRAME.test(line);
      return h("li", { class: frameLike ? (library ? "frame library" : "frame in-app") : "frame text" },
        frameLike && !library ? h("span", { class: "visually-hidden" }, "In-app frame: ") : null,
        h("code", {}, line));
    }),
  );
}

function grouping(g) {
  return [
    h("p", { class: "muted" }, "Events share a group when their fingerprint is the same. It is computed from the normalised message and the in-app frames (or a custom fingerprint sent by the SDK)."),
    facts([
      ["Fingerprint", g.fingerprint && h("code", {}, g.fingerprint)],
      ["Grouping version", g.version],
      ["Normalised message", g.normalized_message && h("code", {}, g.normalized_message)],
      ["Custom fingerprint", g.custom_fingerprint && !(Array.isArray(g.custom_fingerprint) && !g.custom_fingerprint.length) && h("code", {}, Array.isArray(g.custom_fingerprint) ? g.custom_fingerprint.join(" · ") : String(g.custom_fingerprint))],
      ["Frames", Array.isArray(g.frames) && g.frames.length ? h("ol", { class: "stack" }, g.frames.map((f) => h("li", { class: "frame in-app" }, h("code", {}, typeof f === "string" ? f : JSON.stringify(f))))) : "none (message only)"],
    ]),
  ];
}
